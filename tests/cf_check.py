"""The IOOS compliance-checker's CF-1.8 suite, run offline on one file (shared by the tests)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from compliance_checker.runner import CheckSuite, ComplianceChecker

CheckSuite.load_all_available_checkers()


def cf_report(path: str | Path) -> dict:
    """The checker's JSON result for ``path`` under ``cf:1.8``."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        ComplianceChecker.run_checker(str(path), ["cf:1.8"], verbose=0, criteria="normal",
                                      output_filename=str(report), output_format="json")
        return json.loads(report.read_text())["cf:1.8"]


def cf_high_priority(path: str | Path) -> list[str]:
    """High-priority CF failures of ``path`` (an empty list passes)."""
    return [msg for item in cf_report(path)["high_priorities"] for msg in item["msgs"]]


def cf_findings(path: str | Path, priority: str = "high") -> list[str]:
    """The checker's messages of one priority (``high``, ``medium``, ``low``) for ``path``."""
    return [msg for item in cf_report(path)[f"{priority}_priorities"] for msg in item["msgs"]]
