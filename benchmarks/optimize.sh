#!/usr/bin/env bash
# `bistoury optimize` against backtesting.py's `Backtest.optimize` on the
# same bars and the same 2-parameter grid, in one sitting.
#
#   benchmarks/optimize.sh [BARS] [ROUNDS]
#
# Builds bistoury in release, installs backtesting.py from PyPI in a
# virtual environment under target/, writes BARS hourly bars of one market
# (default 100,000), and times both searches ROUNDS times (default 3),
# alternating. The grid: fast 5..24 × slow 30..125 step 5 = 400 trials.
set -euo pipefail
cd "$(dirname "$0")/.."
bars=${1:-100000}
rounds=${2:-3}
work=target/bench-optimize
mkdir -p "$work"
cargo build --release --quiet --bin bistoury
source benchmarks/backtesting_py_venv.sh "$work/venv"
python3 benchmarks/write_bars.py "$bars" "$work/bars.csv"
# The example's lone crossover on this file; signal details off (fewer
# messages: a search needs only the aggregated signals).
{ printf '[data]\nkind = "file"\npath = "bars.csv"\ninterval = "1h"\n'
  cat orchestrator/examples/lone_crossover.toml; } > "$work/base.toml"
export BISTOURY__SIGNALS__PUBLISH_DETAILS=false
cat > "$work/search.toml" <<'TOML'
objective = "sharpe"
constraints = ["signals.ma_crossover.fast < signals.ma_crossover.slow"]

[[parameter]]
key = "signals.ma_crossover.fast"
from = 5
to = 24
step = 1

[[parameter]]
key = "signals.ma_crossover.slow"
from = 30
to = 125
step = 5
TOML
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
for round in $(seq "$rounds"); do
    echo "round $round"
    start=$(date +%s.%N)
    target/release/bistoury optimize --config "$work/base.toml" --search "$work/search.toml" \
        --out "$work/optimize" > "$work/bistoury.out"
    end=$(date +%s.%N)
    python3 -c "s=$end-$start; print(f'bistoury: 400 trials over $bars bars in {s:.2f} s: {400/s:.2f} trials/s (load included)')"
    grep -E "^  #1 " "$work/bistoury.out" || true
    "$work/venv/bin/python" benchmarks/backtesting_py_optimize.py "$work/bars.csv" 5 24 30 125 5
done
