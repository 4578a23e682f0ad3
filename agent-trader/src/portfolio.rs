//! Positions, cash and PnL, exactly, in `Decimal`.
//!
//! Each position keeps its signed quantity and its exact cost basis (sum of
//! signed quantity x price of the open lot), not an average price: closing
//! part of a position moves a share of the cost basis into realised PnL by
//! subtraction, so nothing is lost to rounding and
//! `equity = initial cash + realised + unrealised - fees` holds to the last
//! digit. The average price is derived for display.

use bus_core::model::payload::{Side, Symbol};
use bus_core::model::SymbolMap;
use rust_decimal::Decimal;
use serde::Serialize;

/// Decimal places kept when part of a cost basis is realised.
const COST_SCALE: u32 = 12;

/// One market's position.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Position {
    /// Signed quantity: positive long, negative short.
    pub quantity: Decimal,
    /// Sum of signed quantity x price of the open lot.
    pub cost_basis: Decimal,
    /// Realised PnL in this market (before fees).
    pub realised: Decimal,
    /// Fees paid in this market.
    pub fees: Decimal,
    /// Last mark price.
    pub mark: Decimal,
}

impl Position {
    /// Average entry price (zero when flat).
    pub fn average_price(&self) -> Decimal {
        if self.quantity.is_zero() {
            Decimal::ZERO
        } else {
            (self.cost_basis / self.quantity).abs()
        }
    }

    /// Unrealised PnL at the mark.
    pub fn unrealised(&self) -> Decimal {
        self.quantity * self.mark - self.cost_basis
    }
}

/// What one fill did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FillEffect {
    /// PnL realised by the closing part of the fill (zero if it only opened).
    pub realised: Decimal,
    /// True when the fill reduced or closed an existing position.
    pub closed_some: bool,
}

/// The account's sums at one moment ([`Portfolio::totals`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Realised PnL before fees.
    pub realised: Decimal,
    /// Unrealised PnL at the marks.
    pub unrealised: Decimal,
    /// Fees paid.
    pub fees: Decimal,
    /// Cash plus the marked value of every position.
    pub equity: Decimal,
}

/// Cash and positions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Portfolio {
    /// Starting cash.
    pub initial_cash: Decimal,
    /// Cash now.
    pub cash: Decimal,
    /// Positions by market, in symbol order.
    pub positions: SymbolMap<Position>,
}

impl Portfolio {
    /// A portfolio holding `initial_cash`.
    pub fn new(initial_cash: Decimal) -> Self {
        Self {
            initial_cash,
            cash: initial_cash,
            positions: SymbolMap::new(),
        }
    }

    /// Applies a fill of `quantity` (> 0) at `price` paying `fee`.
    pub fn apply_fill(
        &mut self,
        symbol: &Symbol,
        side: Side,
        quantity: Decimal,
        price: Decimal,
        fee: Decimal,
    ) -> FillEffect {
        let trade = side.sign() * quantity;
        self.cash -= trade * price + fee;
        let position = self.positions.get_or_default(symbol);
        position.fees += fee;
        if position.mark.is_zero() {
            position.mark = price;
        }
        let mut effect = FillEffect {
            realised: Decimal::ZERO,
            closed_some: false,
        };
        let mut remaining = trade;
        if !position.quantity.is_zero()
            && position.quantity.is_sign_positive() != trade.is_sign_positive()
        {
            let closing = remaining.abs().min(position.quantity.abs());
            let closing_signed = if trade.is_sign_negative() {
                -closing
            } else {
                closing
            };
            let removed = if closing == position.quantity.abs() {
                position.cost_basis
            } else {
                // Rounded to a fixed scale so later sums stay well inside
                // Decimal's 28 digits; whatever rounding happens here moves
                // between cost basis and realised PnL, never out of the books.
                (position.cost_basis * closing / position.quantity.abs()).round_dp(COST_SCALE)
            };
            let realised = -closing_signed * price - removed;
            position.cost_basis -= removed;
            position.quantity += closing_signed;
            position.realised += realised;
            remaining -= closing_signed;
            effect = FillEffect {
                realised,
                closed_some: true,
            };
        }
        if !remaining.is_zero() {
            position.quantity += remaining;
            position.cost_basis += remaining * price;
        }
        effect
    }

    /// Marks a market at `price`, held or not (a position opened later on
    /// the same bar is then marked at the bar's close, not at its fill
    /// price); returns the signed quantity held there (what a caller
    /// marking every candle usually asks next).
    pub fn mark(&mut self, symbol: &Symbol, price: Decimal) -> Decimal {
        let position = self.positions.get_or_default(symbol);
        position.mark = price;
        position.quantity
    }

    /// Signed quantity held.
    pub fn quantity(&self, symbol: &Symbol) -> Decimal {
        self.positions
            .get(symbol)
            .map_or(Decimal::ZERO, |p| p.quantity)
    }

    /// Realised PnL, all markets.
    pub fn realised(&self) -> Decimal {
        self.positions.values().map(|p| p.realised).sum()
    }

    /// Unrealised PnL, all markets.
    pub fn unrealised(&self) -> Decimal {
        self.positions.values().map(Position::unrealised).sum()
    }

    /// Fees paid, all markets.
    pub fn fees(&self) -> Decimal {
        self.positions.values().map(|p| p.fees).sum()
    }

    /// Realised PnL, unrealised PnL, fees and equity in one pass over the
    /// positions (each marked value computed once): the same sums, in the
    /// same order, as [`Self::realised`], [`Self::unrealised`],
    /// [`Self::fees`] and [`Self::equity`].
    pub fn totals(&self) -> Totals {
        // Starting from the first position rather than from zero: adding to
        // zero gives the same value and scale, and a trader asks for these
        // sums on every candle it holds a position through.
        let mut positions = self.positions.values();
        let Some(first) = positions.next() else {
            return Totals {
                equity: self.cash,
                ..Totals::default()
            };
        };
        let mut value = first.quantity * first.mark;
        let mut totals = Totals {
            realised: first.realised,
            unrealised: value - first.cost_basis,
            fees: first.fees,
            equity: Decimal::ZERO,
        };
        for position in positions {
            let marked = position.quantity * position.mark;
            totals.realised += position.realised;
            totals.unrealised += marked - position.cost_basis;
            totals.fees += position.fees;
            value += marked;
        }
        totals.equity = self.cash + value;
        totals
    }

    /// Cash plus the marked value of every position.
    pub fn equity(&self) -> Decimal {
        self.cash
            + self
                .positions
                .values()
                .map(|p| p.quantity * p.mark)
                .sum::<Decimal>()
    }

    /// Markets with a non-zero position.
    pub fn open_positions(&self) -> usize {
        self.positions
            .values()
            .filter(|p| !p.quantity.is_zero())
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rust_decimal_macros::dec;

    fn btc() -> Symbol {
        Symbol::new("BTC").unwrap()
    }

    #[test]
    fn long_round_trip() {
        let mut p = Portfolio::new(dec!(1000));
        p.apply_fill(&btc(), Side::Buy, dec!(2), dec!(100), dec!(0.2));
        assert_eq!(p.positions[&btc()].average_price(), dec!(100));
        let e = p.apply_fill(&btc(), Side::Sell, dec!(1), dec!(120), dec!(0.12));
        assert_eq!(e.realised, dec!(20));
        p.mark(&btc(), dec!(110));
        assert_eq!(p.unrealised(), dec!(10));
        assert_eq!(p.fees(), dec!(0.32));
        assert_eq!(p.equity(), dec!(1000) + dec!(20) + dec!(10) - dec!(0.32));
    }

    #[test]
    fn short_and_flip() {
        let mut p = Portfolio::new(dec!(1000));
        p.apply_fill(&btc(), Side::Sell, dec!(2), dec!(100), dec!(0));
        let e = p.apply_fill(&btc(), Side::Buy, dec!(3), dec!(90), dec!(0));
        assert_eq!(e.realised, dec!(20));
        assert_eq!(p.quantity(&btc()), dec!(1));
        assert_eq!(p.positions[&btc()].average_price(), dec!(90));
    }

    #[test]
    fn an_empty_account_totals_its_cash() {
        let totals = Portfolio::new(dec!(1000.50)).totals();
        assert_eq!(
            totals,
            Totals {
                equity: dec!(1000.50),
                ..Totals::default()
            }
        );
    }

    proptest! {
        /// The accounting identity holds exactly after any sequence of fills.
        #[test]
        fn identity_holds_exactly(fills in proptest::collection::vec((any::<bool>(), 1u32..5000, 1u32..100_000, 0u32..500), 1..60), mark in 1u32..100_000) {
            let mut p = Portfolio::new(dec!(100000));
            for (buy, q, price, fee) in fills {
                let side = if buy { Side::Buy } else { Side::Sell };
                p.apply_fill(&btc(), side, Decimal::new(q as i64, 3), Decimal::new(price as i64, 2), Decimal::new(fee as i64, 4));
            }
            p.mark(&btc(), Decimal::new(mark as i64, 2));
            prop_assert_eq!(p.equity(), p.initial_cash + p.realised() + p.unrealised() - p.fees());
        }

        /// One pass gives each sum exactly as its own function does, over
        /// several markets.
        #[test]
        fn totals_are_the_separate_sums(fills in proptest::collection::vec((0usize..3, any::<bool>(), 1u32..5000, 1u32..100_000, 0u32..500), 1..60), marks in proptest::collection::vec(1u32..100_000, 3)) {
            let symbols = ["BTC", "ETH", "SOL"].map(|s| Symbol::new(s).unwrap());
            let mut p = Portfolio::new(dec!(100000));
            for (market, buy, q, price, fee) in fills {
                let side = if buy { Side::Buy } else { Side::Sell };
                p.apply_fill(&symbols[market], side, Decimal::new(q as i64, 3), Decimal::new(price as i64, 2), Decimal::new(fee as i64, 4));
            }
            for (symbol, mark) in symbols.iter().zip(marks) {
                p.mark(symbol, Decimal::new(mark as i64, 2));
            }
            let totals = p.totals();
            prop_assert_eq!((totals.realised, totals.unrealised, totals.fees, totals.equity), (p.realised(), p.unrealised(), p.fees(), p.equity()));
            let scales = |sums: [Decimal; 4]| sums.map(|d| d.scale());
            prop_assert_eq!(
                scales([totals.realised, totals.unrealised, totals.fees, totals.equity]),
                scales([p.realised(), p.unrealised(), p.fees(), p.equity()])
            );
        }
    }
}
