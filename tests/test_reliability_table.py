"""The README's reliability table is the one generated from the recorded test outcomes, and
those outcomes cover every fault and bad-input case the tests define now."""

from __future__ import annotations

import json

import test_bad_inputs
import test_faults
from reliability_table import README, RESULTS, readme_table, render


def test_readme_table_is_the_generated_one():
    results = json.loads(RESULTS.read_text())
    assert readme_table(README.read_text()) == render(results), (
        "the README's reliability table is stale: run `python tests/reliability_table.py --run "
        "--write`")


def test_recorded_outcomes_cover_every_case():
    recorded = json.loads(RESULTS.read_text())["tests"]
    cases = {f"tests/test_bad_inputs.py::test_bad_input_is_refused_with_one_clear_message[{c.id}]"
             for c in test_bad_inputs.CASES}
    faults = {f"tests/test_faults.py::{name}" for name, fn in vars(test_faults).items()
              if name.startswith("test_") and any(m.name == "fault" for m in getattr(fn, "pytestmark", []))}
    assert set(recorded) == cases | faults, "rerun `python tests/reliability_table.py --run --write`"
    assert len(cases) >= 60
    assert all(t["outcome"] == "passed" for t in recorded.values() if t["kind"] == "bad_input")
    assert sum(t["outputs_lost"] for t in recorded.values()) == 0
