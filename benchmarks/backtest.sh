#!/usr/bin/env bash
# A backtest fed from a candle file against backtesting.py's `Backtest.run`
# on the same bars and strategy, in one sitting.
#
#   benchmarks/backtest.sh [BARS] [ROUNDS]
#
# Writes BARS hourly bars of one market (default 50,000), installs
# backtesting.py from PyPI in a virtual environment under target/ (shared
# with optimize.sh), then ROUNDS times (default 5), alternating: the
# criterion group `backtest_candle_file` (the lone 10/20 crossover of
# orchestrator/examples/lone_crossover.toml on those bars: reading the
# file, the run and its report) and backtesting.py's own 10/20 crossover
# example (reading the file, the run and its statistics), five runs each.
set -euo pipefail
cd "$(dirname "$0")/.."
bars=${1:-50000}
rounds=${2:-5}
work=target/bench-optimize
mkdir -p "$work"
source benchmarks/backtesting_py_venv.sh "$work/venv"
python3 benchmarks/write_bars.py "$bars" "$work/backtest-bars.csv"
export BISTOURY_BENCH_BARS="$PWD/$work/backtest-bars.csv"
cargo bench --quiet -p orchestrator --bench backtest --no-run
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
for round in $(seq "$rounds"); do
    echo "round $round"
    cargo bench --quiet -p orchestrator --bench backtest -- backtest_candle_file \
        --measurement-time 5 2>&1 | grep -E "time:|thrpt:"
    "$work/venv/bin/python" benchmarks/backtesting_py_backtest.py "$BISTOURY_BENCH_BARS" 5
done
