"""Sandbox cost per HumanEval item: the code-exec sandbox's wall time minus the program's own run time.

For each canonical HumanEval solution (the program ``code-exec`` builds: prompt + solution + test + check), the
sandboxed run (``safereason.sandbox.run_program``: unshare + launcher + namespaces + limits, one process per
program) is timed from the caller; the program's own run time is the time its ``exec`` takes, measured inside a
plain ``python -I`` subprocess that reports it. Items run one at a time, so that nothing competes; each item is
run ``--repeats`` times and its best time counts on both sides. Target: overhead <= 50 ms per item (median).

    .venv/bin/python benchmarks/sandbox_cost.py [--n 164] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from safereason.judges.code_exec import build_program
from safereason.sandbox import isolation, run_program

DATA = Path(__file__).resolve().parents[1].parent / "shared/data/humaneval/HumanEval.jsonl"
TARGET_MS = 50.0
#: Times ``exec`` of the program read from stdin; only for the published canonical solutions (trusted code).
OWN_TIMER = ("import sys, time\nsource = sys.stdin.read()\nglobs = {'__name__': '__main__'}\n"
             "start = time.perf_counter()\nexec(compile(source, 'program.py', 'exec'), globs)\n"
             "sys.stderr.write(f'\\nOWN {time.perf_counter() - start}\\n')\n")


def own_time(program: str) -> float:
    done = subprocess.run([sys.executable, "-I", "-c", OWN_TIMER], input=program, capture_output=True, text=True,
                          timeout=60, check=True)
    return float(done.stderr.rsplit("OWN ", 1)[1])


def sandbox_time(program: str) -> float:
    started = time.perf_counter()
    result = run_program(program)
    elapsed = time.perf_counter() - started
    if not result.passed:
        raise SystemExit(f"a canonical solution did not pass in the sandbox: {result.reason}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=164, help="items (the first N of HumanEval)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = [json.loads(line) for line in DATA.read_text().splitlines()][: args.n]
    iso = isolation()
    overheads, owns, walls = [], [], []
    for r in rows:
        program = build_program(r["prompt"], r["canonical_solution"], r["test"], r["entry_point"])
        own = min(own_time(program) for _ in range(args.repeats))
        wall = min(sandbox_time(program) for _ in range(args.repeats))
        owns.append(own)
        walls.append(wall)
        overheads.append(wall - own)
    ms = sorted(1000 * o for o in overheads)
    median = statistics.median(ms)
    print(f"sandbox: {iso.describe()}")
    print(f"items: {len(rows)}, best of {args.repeats}")
    print(f"program's own run time: median {1000 * statistics.median(owns):.2f} ms, max {1000 * max(owns):.1f} ms")
    print(f"sandboxed wall time:    median {1000 * statistics.median(walls):.1f} ms")
    print(f"overhead per item:      median {median:.1f} ms, p90 {ms[int(0.9 * (len(ms) - 1))]:.1f} ms, "
          f"max {ms[-1]:.1f} ms (target <= {TARGET_MS:g} ms: {'met' if median <= TARGET_MS else 'NOT met'})")


if __name__ == "__main__":
    main()
