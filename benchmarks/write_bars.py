"""Writes BARS hourly candles of one market (BTC) to PATH as a Bistoury
candle CSV: a seeded xorshift walk with a slow sine trend, so every
benchmark and every run of one reads the same bars.

Usage: python3 write_bars.py BARS PATH
"""

import math
import sys


def main():
    bars, path = int(sys.argv[1]), sys.argv[2]
    state, price = 17, 100.0
    with open(path, "w") as out:
        out.write("open_time_ms,symbol,open,high,low,close,volume\n")
        for i in range(bars):
            state ^= (state << 13) & (2**64 - 1)
            state ^= state >> 7
            state ^= (state << 17) & (2**64 - 1)
            noise = (state >> 11) / 2**53 - 0.5
            trend = 0.002 * math.sin(i / 200.0)
            open_ = price
            close = round(open_ * (1 + trend + noise * 0.01), 2)
            out.write(
                f"{1577836800000 + i * 3600000},BTC,{open_:.2f},{max(open_, close) * 1.002:.2f},"
                f"{min(open_, close) * 0.998:.2f},{close:.2f},10\n"
            )
            price = close


if __name__ == "__main__":
    main()
