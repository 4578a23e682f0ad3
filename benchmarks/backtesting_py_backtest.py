"""One backtest in backtesting.py, timed: the baseline of the candle-file
backtest bench (`benchmarks/backtest.sh`).

Usage: python backtesting_py_backtest.py BARS.csv REPEATS

Reads BARS.csv (a Bistoury candle file of one market) and runs
backtesting.py's own 10/20 moving-average crossover example on it
(commission 0.1 %), REPEATS times; each time counts reading the file
and the run with its statistics, as `bistoury backtest` counts reading,
the run and its report. Prints each time and the median in bars/s.
"""

import statistics
import sys
import time

from backtesting_py_optimize import backtest, load


def main():
    path, repeats = sys.argv[1], int(sys.argv[2])
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        frame = load(path)
        stats = backtest(frame).run()
        seconds.append(time.perf_counter() - started)
    median = statistics.median(seconds)
    print(f"backtesting.py: {len(frame)} bars, {stats['# Trades']} trades; "
          f"runs {', '.join(f'{s * 1000:.1f}' for s in seconds)} ms; "
          f"median {median * 1000:.1f} ms = {len(frame) / median / 1000:.1f} k bars/s")


if __name__ == "__main__":
    main()
