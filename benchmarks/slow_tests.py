"""The tests marked ``slow`` (too long for CI's budget), run here, each ``--repeats`` times:
pass count and wall time per test.

    python benchmarks/slow_tests.py [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine_info

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def slow_tests() -> list[str]:
    listed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-m",
            "slow",
            "--collect-only",
            "-p",
            "no:cacheprovider",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line for line in listed.splitlines() if "::" in line]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    rows = []
    for test in slow_tests():
        times, passed = [], 0
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            result = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pytest",
                    "-q",
                    "-m",
                    "slow",
                    test,
                    "-p",
                    "no:cacheprovider",
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
            )
            times.append(time.perf_counter() - t0)
            passed += result.returncode == 0
            if result.returncode != 0:
                print(result.stdout[-3000:], flush=True)
        rows.append(
            {
                "test": test,
                "runs": args.repeats,
                "passed": passed,
                "wall_s_median": statistics.median(times),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    out = {"machine": machine_info(), "tests": rows}
    (RESULTS / "slow_tests.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
