//! Strategies from outside this crate: a program registers a factory under
//! a name, and `[signals.custom.<name>]` in the configuration turns it on,
//! with its weight and parameters. Nothing else changes: the agent builds
//! one per symbol, weighs and aggregates its signals like the built-in
//! ones.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::{CustomStrategyConfig, SignalsConfig};
use crate::strategy::Strategy;

/// Builds one symbol's instance of a strategy from its configuration, or
/// says what is wrong with the parameters.
pub type StrategyFactory =
    Arc<dyn Fn(&CustomStrategyConfig) -> Result<Box<dyn Strategy>, String> + Send + Sync>;

/// The strategies a program adds, by name.
#[derive(Clone, Default)]
pub struct StrategyRegistry {
    factories: BTreeMap<&'static str, StrategyFactory>,
}

impl std::fmt::Debug for StrategyRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.factories.keys()).finish()
    }
}

impl StrategyRegistry {
    /// No strategies.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `factory` under `name`, which must be the name its
    /// strategies give ([`Strategy::name`]): signals and weights go by it.
    pub fn register(
        mut self,
        name: &'static str,
        factory: impl Fn(&CustomStrategyConfig) -> Result<Box<dyn Strategy>, String>
            + Send
            + Sync
            + 'static,
    ) -> Self {
        self.factories.insert(name, Arc::new(factory));
        self
    }

    /// Every problem with `config`'s custom strategies, each naming its
    /// key under `prefix`: a name nothing is registered under, parameters
    /// its factory refuses, a strategy that calls itself something else.
    pub fn check(&self, config: &SignalsConfig, prefix: &str) -> Vec<String> {
        let mut errors = Vec::new();
        for (name, custom) in &config.custom {
            match self.build(name, custom) {
                Ok(_) => {}
                Err(problem) => errors.push(format!("{prefix}.custom.{name}: {problem}")),
            }
        }
        errors
    }

    /// One instance of the strategy registered as `name`.
    pub fn build(
        &self,
        name: &str,
        config: &CustomStrategyConfig,
    ) -> Result<Box<dyn Strategy>, String> {
        let Some((registered, factory)) = self.factories.get_key_value(name) else {
            let known: Vec<&str> = self.factories.keys().copied().collect();
            return Err(match known.is_empty() {
                true => "no strategy is registered under this name (this program registers none)"
                    .to_string(),
                false => format!(
                    "no strategy is registered under this name; registered: {}",
                    known.join(", ")
                ),
            });
        };
        let strategy = factory(config)?;
        if strategy.name() != *registered {
            return Err(format!(
                "its factory built a strategy named {:?}",
                strategy.name()
            ));
        }
        Ok(strategy)
    }
}
