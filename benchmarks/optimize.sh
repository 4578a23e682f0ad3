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
if [ ! -x "$work/venv/bin/python" ]; then
    python3 -m venv "$work/venv"
    "$work/venv/bin/pip" install --quiet backtesting==0.6.6
fi
python3 - "$bars" "$work/bars.csv" <<'PY'
import math, sys
bars, path = int(sys.argv[1]), sys.argv[2]
state, price = 17, 100.0
with open(path, "w") as out:
    out.write("open_time_ms,symbol,open,high,low,close,volume\n")
    for i in range(bars):
        state ^= (state << 13) & (2**64 - 1); state ^= state >> 7; state ^= (state << 17) & (2**64 - 1)
        noise = (state >> 11) / 2**53 - 0.5
        trend = 0.002 * math.sin(i / 200.0)
        open_ = price
        close = round(open_ * (1 + trend + noise * 0.01), 2)
        out.write(f"{1577836800000 + i * 3600000},BTC,{open_:.2f},{max(open_, close) * 1.002:.2f},"
                  f"{min(open_, close) * 0.998:.2f},{close:.2f},10\n")
        price = close
PY
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
