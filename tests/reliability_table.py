"""The README's "Reliability" table, generated from the outcomes of the reliability tests.

    python tests/reliability_table.py --run     # run the tests, write tests/reliability.json
    python tests/reliability_table.py --write   # render the table into README.md
    python tests/reliability_table.py           # print the table

``--run`` runs ``tests/test_faults.py`` (faults injected on a local cluster) and
``tests/test_bad_inputs.py`` (bad inputs) with ``RHO_RELIABILITY_JSON`` set; the conftest hook
records each marked test's outcome and, for faults, the outputs it found lost. Nothing in the
table is typed by hand; ``tests/test_reliability_table.py`` checks that the README holds the
table of the recorded results and that they cover every case the tests define.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "tests" / "reliability.json"
README = ROOT / "README.md"
START, END = "<!-- reliability-table:start -->", "<!-- reliability-table:end -->"
CATEGORIES = {"config": "pipeline file and --cluster", "data": "netCDF sweep",
              "checkpoint": "checkpoints", "api": "Python API requests",
              "output": "output folder and names"}


def render(results: dict) -> str:
    """Markdown: faults injected and survived, bad inputs refused, outputs lost."""
    tests = results["tests"].values()
    faults = [t for t in tests if t["kind"] == "fault"]
    bad = [t for t in tests if t["kind"] == "bad_input"]
    ok = lambda group: sum(t["outcome"] == "passed" for t in group)  # noqa: E731
    lines = ["| what was tried | tried | survived or refused with one clear message |",
             "|---|---:|---:|",
             f"| faults injected on a local Dask cluster | {len(faults)} | {ok(faults)} |"]
    for category, what in CATEGORIES.items():
        group = [t for t in bad if t["label"] == category]
        lines.append(f"| bad inputs: {what} | {len(group)} | {ok(group)} |")
    lines.append(f"| **bad inputs, all** | **{len(bad)}** | **{ok(bad)}** |")
    lost = sum(t["outputs_lost"] for t in faults)
    skipped = sum(t["outcome"] == "skipped" for t in faults)
    lines += ["", f"Outputs lost: **{lost}**." +
              (f" ({skipped} fault test(s) skipped on the machine that made this table.)"
               if skipped else ""), "", "Faults injected:", ""]
    lines += [f"- {t['label']} ({t['outcome']})" for t in faults]
    return "\n".join(lines)


def readme_table(text: str) -> str:
    """The generated block of the README (between the markers)."""
    start, end = text.index(START) + len(START), text.index(END)
    return text[start:end].strip("\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", action="store_true", help="run the reliability tests first")
    parser.add_argument("--write", action="store_true", help="write the table into README.md")
    args = parser.parse_args()
    if args.run:
        env = {**os.environ, "RHO_RELIABILITY_JSON": str(RESULTS), "OMP_NUM_THREADS": "1"}
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:warnings",
                        "tests/test_faults.py", "tests/test_bad_inputs.py"], cwd=ROOT, env=env)
    table = render(json.loads(RESULTS.read_text()))
    if args.write:
        text = README.read_text()
        start, end = text.index(START) + len(START), text.index(END)
        README.write_text(text[:start] + "\n" + table + "\n" + text[end:])
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
