"""The same parameter search as `bistoury optimize` in backtesting.py, timed.

Usage: python backtesting_py_optimize.py BARS.csv FAST_FROM FAST_TO SLOW_FROM SLOW_TO SLOW_STEP

BARS.csv is a Bistoury candle file of one market (open_time_ms, symbol,
open, high, low, close, volume). The strategy is backtesting.py's own
moving-average crossover example (long on a golden cross, short on a
death cross), commission 0.1 %, optimised for the Sharpe ratio over
n1 in range(FAST_FROM, FAST_TO + 1) and n2 in range(SLOW_FROM, SLOW_TO + 1,
SLOW_STEP) with n1 < n2. Prints the trial count, the seconds the search
took and trials per second.
"""

import sys
import time

import pandas as pd
from backtesting import Backtest, Strategy
from backtesting.lib import crossover
from backtesting.test import SMA


class SmaCross(Strategy):
    n1 = 10
    n2 = 20

    def init(self):
        self.sma1 = self.I(SMA, self.data.Close, self.n1)
        self.sma2 = self.I(SMA, self.data.Close, self.n2)

    def next(self):
        if crossover(self.sma1, self.sma2):
            self.position.close()
            self.buy()
        elif crossover(self.sma2, self.sma1):
            self.position.close()
            self.sell()


def load(path):
    """A Bistoury candle file as backtesting.py's frame."""
    frame = pd.read_csv(path)
    frame.index = pd.to_datetime(frame["open_time_ms"], unit="ms")
    return frame.rename(
        columns={"open": "Open", "high": "High", "low": "Low", "close": "Close", "volume": "Volume"}
    )[["Open", "High", "Low", "Close", "Volume"]]


def backtest(frame):
    return Backtest(frame, SmaCross, cash=100_000, commission=0.001, finalize_trades=True)


def main():
    path = sys.argv[1]
    fast_from, fast_to, slow_from, slow_to, slow_step = map(int, sys.argv[2:7])
    frame = load(path)
    backtest_ = backtest(frame)
    n1 = range(fast_from, fast_to + 1)
    n2 = range(slow_from, slow_to + 1, slow_step)
    trials = sum(1 for a in n1 for b in n2 if a < b)
    started = time.perf_counter()
    best = backtest_.optimize(n1=n1, n2=n2, constraint=lambda p: p.n1 < p.n2, maximize="Sharpe Ratio")
    seconds = time.perf_counter() - started
    print(f"backtesting.py: {trials} trials over {len(frame)} bars in {seconds:.2f} s: "
          f"{trials / seconds:.2f} trials/s; best n1={best._strategy.n1} n2={best._strategy.n2}")


if __name__ == "__main__":
    main()
