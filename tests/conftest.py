"""Test-wide settings.

Tests use tiny models, for which one intra-op thread is fastest; several OpenMP threads on a
shared 2-core machine can be 100x slower (spin-waiting), so tests pin torch to one thread.
"""

import torch

torch.set_num_threads(1)


# -- the reliability table ------------------------------------------------------------------
# With RHO_RELIABILITY_JSON=path set, the outcome of every test marked `fault` or `bad_input`
# is written there at the end of the session (tests/reliability_table.py renders the README's
# table from it). The outcome is the test's own: passed, failed or skipped.

import json  # noqa: E402
import os  # noqa: E402

_RELIABILITY: dict[str, dict] = {}


def pytest_runtest_makereport(item, call):
    marker = item.get_closest_marker("fault") or item.get_closest_marker("bad_input")
    if marker is None:
        return
    entry = _RELIABILITY.setdefault(item.nodeid, {
        "kind": marker.name, "label": marker.args[0] if marker.args else "",
        "module": item.module.__name__, "outcome": "passed", "outputs_lost": 0})
    if call.excinfo is not None:
        skipped = call.excinfo.errisinstance(__import__("pytest").skip.Exception)
        if entry["outcome"] != "failed":
            entry["outcome"] = "skipped" if skipped else "failed"


def pytest_runtest_logreport(report):
    entry = _RELIABILITY.get(report.nodeid)
    if entry is not None:
        for name, value in report.user_properties:
            if name == "outputs_lost":
                entry["outputs_lost"] = max(entry["outputs_lost"], int(value))


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("RHO_RELIABILITY_JSON")
    if path and _RELIABILITY:
        with open(path, "w") as f:
            json.dump({"tests": dict(sorted(_RELIABILITY.items()))}, f, indent=1, sort_keys=True)
            f.write("\n")
