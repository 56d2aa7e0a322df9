"""Wall time of `ethosu-build` when the build is already stored (the up-to-date path).

    python benchmarks/rebuild_up_to_date.py [--runs 5] [-- extra overrides]

Builds once in a temporary folder (not timed), then times RUNS identical invocations of the
console script as a user runs it, and prints each time and the median. Target: under 3 s.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_SECONDS = 3.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    exe = str(Path(sys.executable).parent / "ethosu-build")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        subprocess.run([exe, *args.overrides], cwd=tmp, check=True, capture_output=True)
        print(f"first (cold) build: {time.perf_counter() - t0:.1f} s", flush=True)
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            res = subprocess.run([exe, *args.overrides], cwd=tmp, check=True, capture_output=True, text=True)
            times.append(time.perf_counter() - t0)
            assert "up to date" in res.stdout + res.stderr, res.stdout + res.stderr
        print("up-to-date rebuilds:", ", ".join(f"{t:.2f} s" for t in times))
        median = statistics.median(times)
        print(
            f"median {median:.2f} s (target < {TARGET_SECONDS:.0f} s): "
            f"{'OK' if median < TARGET_SECONDS else 'TOO SLOW'}"
        )
        sys.exit(0 if median < TARGET_SECONDS else 1)


if __name__ == "__main__":
    main()
