"""Cold start of `mudpuppy --help` against `python -c pass` in the same run (issue 2: under 0.3 s).

Run: .venv/bin/python bench/cli_startup.py [--runs 20]
Each command runs in a fresh interpreter; we report the median wall time of each and their difference/ratio,
so the number is about our imports, not about the machine.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def median_seconds(argv: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    cases = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "mudpuppy --help": [sys.executable, "-m", "mudpuppy", "--help"],
        "mudpuppy config validate (tiny example)": [
            sys.executable, "-m", "mudpuppy", "config", "validate", "templates/examples/tiny-alpaca.yml",
        ],
    }
    subprocess.run(cases["mudpuppy --help"], check=True, stdout=subprocess.DEVNULL)  # warm the .pyc cache
    base = None
    print("| command | median s | minus baseline s | ratio |")
    print("|---|---|---|---|")
    for name, argv in cases.items():
        seconds = median_seconds(argv, args.runs)
        base = base if base is not None else seconds
        print(f"| {name} | {seconds:.3f} | {seconds - base:.3f} | {seconds / base:.1f}x |")


if __name__ == "__main__":
    main()
