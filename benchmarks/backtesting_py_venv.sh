# Sourced by the benchmark scripts: backtesting.py 0.6.6 from PyPI in a
# virtual environment at $1 (made once, kept).
if [ ! -x "$1/bin/python" ]; then
    python3 -m venv "$1"
    "$1/bin/pip" install --quiet backtesting==0.6.6
fi
