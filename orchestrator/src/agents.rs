//! The agents a Bistoury configuration wires, and what each may do.
//!
//! One place for what used to be spelled as strings across the
//! orchestrator: the names (config sections `[agents.<name>]`, the
//! `bistoury agent <name>` argument, agent ids), which agents can be
//! rebuilt after a panic, and which can run as several instances.

use std::fmt;
use std::str::FromStr;

/// One of the agents a configuration runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AgentKind {
    /// Brings market data in (a source).
    Collector,
    /// Turns candles into signals.
    Signals,
    /// Approves or refuses orders; halts trading.
    Risk,
    /// Sizes and fills orders, keeps the book.
    Trader,
    /// Follows the run and makes the report.
    Report,
}

impl AgentKind {
    /// Every agent, in declaration order.
    pub const ALL: [AgentKind; 5] = [
        AgentKind::Collector,
        AgentKind::Signals,
        AgentKind::Risk,
        AgentKind::Trader,
        AgentKind::Report,
    ];

    /// Its name: config section, command-line argument and agent id.
    pub const fn name(self) -> &'static str {
        match self {
            AgentKind::Collector => "collector",
            AgentKind::Signals => "signals",
            AgentKind::Risk => "risk",
            AgentKind::Trader => "trader",
            AgentKind::Report => "report",
        }
    }

    /// Whether a fresh agent built from the configuration can take over
    /// after a panic: signals keep only rolling indicators, risk saves the
    /// state a restart must not lose. The others would lose positions, the
    /// data position or the report's figures.
    pub const fn restartable(self) -> bool {
        matches!(self, AgentKind::Signals | AgentKind::Risk)
    }

    /// Whether several instances can split its work by key (the symbol):
    /// only signals, whose state is per symbol.
    pub const fn partitioned(self) -> bool {
        matches!(self, AgentKind::Signals)
    }

    /// Whether it is the run's source of market data.
    pub const fn is_source(self) -> bool {
        matches!(self, AgentKind::Collector)
    }

    /// The names of the agents for which `keep` holds, comma-separated.
    pub fn names_where(keep: impl Fn(AgentKind) -> bool) -> String {
        Self::ALL
            .into_iter()
            .filter(|kind| keep(*kind))
            .map(AgentKind::name)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for AgentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not one of the agents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no agent named {name:?}; agents are {}", AgentKind::names_where(|_| true))]
pub struct UnknownAgent {
    /// The name given.
    pub name: String,
}

impl FromStr for AgentKind {
    type Err = UnknownAgent;

    fn from_str(name: &str) -> Result<Self, UnknownAgent> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
            .ok_or_else(|| UnknownAgent { name: name.into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_reads_back_as_its_kind_and_others_are_refused() {
        for kind in AgentKind::ALL {
            assert_eq!(kind.name().parse::<AgentKind>(), Ok(kind));
        }
        let error = "executor".parse::<AgentKind>().unwrap_err().to_string();
        assert_eq!(
            error,
            "no agent named \"executor\"; agents are collector, signals, risk, trader, report"
        );
    }

    #[test]
    fn only_signals_split_and_only_signals_and_risk_restart() {
        assert_eq!(AgentKind::names_where(AgentKind::partitioned), "signals");
        assert_eq!(
            AgentKind::names_where(AgentKind::restartable),
            "signals, risk"
        );
        assert_eq!(AgentKind::names_where(AgentKind::is_source), "collector");
    }
}
