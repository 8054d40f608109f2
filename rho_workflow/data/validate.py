"""Validation problems of a sweep, collected and reported together.

Every check of the data layer appends a :class:`Problem` -- file, variable, value, rule and
fix -- instead of stopping at the first; :func:`raise_if_problems` raises one
:class:`DataValidationError` listing all of them. Checks that need the data values (NaN or
inf outside a mask, a mask that changes from run to run, duplicate samples) are computed in
the preprocessing graph by :func:`block_summary` and judged here by :func:`judge_summaries`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

__all__ = ["Problem", "DataValidationError", "raise_if_problems", "block_summary",
           "judge_summaries", "MAX_LISTED"]

MAX_LISTED = 50


@dataclass(frozen=True)
class Problem:
    """One broken rule: where (file, variable), what (value), the rule and the fix."""

    file: str
    variable: str | None
    value: Any
    rule: str
    fix: str

    def __str__(self) -> str:
        where = f"file {self.file}" + (f", variable {self.variable!r}" if self.variable else "")
        value = "" if self.value is None else f" value {self.value!r}"
        return f"{where}:{value} breaks the rule: {self.rule}; fix: {self.fix}"


class DataValidationError(ValueError):
    """The sweep breaks one or more rules; nothing was written. ``problems`` lists each."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems = list(problems)
        lines = [str(p) for p in self.problems[:MAX_LISTED]]
        if len(self.problems) > MAX_LISTED:
            lines.append(f"... and {len(self.problems) - MAX_LISTED} more problems")
        super().__init__(f"the sweep failed validation ({len(self.problems)} problem(s); "
                         "nothing was written):\n  " + "\n  ".join(lines))


def raise_if_problems(problems: Sequence[Problem]) -> None:
    if problems:
        raise DataValidationError(problems)


def block_summary(block: np.ndarray, train: np.ndarray, reference_missing: np.ndarray | None,
                  log_channels: Sequence[int], floor: float) -> dict[str, Any]:
    """Statistics and checks of one block of samples, ``block`` of shape ``(n, C, *spatial)``.

    Returns per channel, over training samples and valid points, the count, mean, sum of
    squared deviations (``m2``), min and max of the values after the log step of the
    transform (Chan et al. 1979 pairwise-combinable moments); per sample the number of
    non-finite points outside the reference mask, the number of points whose missingness
    differs from the reference, and a content digest (duplicate detection).
    """
    x = np.asarray(block, dtype=np.float64)
    n, channels = x.shape[:2]
    finite = np.isfinite(x)
    if reference_missing is None:
        bad = ~finite
        changed = np.zeros(n, dtype=np.int64)
    else:
        ref = np.broadcast_to(reference_missing, x.shape[1:])
        bad = ~finite & ~ref
        changed = (np.isnan(x) != ref).reshape(n, -1).sum(axis=1)
    nonfinite = bad.reshape(n, -1).sum(axis=1)
    digests = [hashlib.blake2b(np.ascontiguousarray(block[i]).tobytes(), digest_size=16).hexdigest()
               for i in range(n)]
    stats = []
    for c in range(channels):
        values = x[train, c]
        values = values[np.isfinite(values)]
        if c in log_channels:
            values = np.log(np.maximum(values, floor))
        count = values.size
        mean = float(values.mean()) if count else 0.0
        stats.append({
            "count": int(count), "mean": mean,
            "m2": float(((values - mean) ** 2).sum()) if count else 0.0,
            "min": float(values.min()) if count else np.inf,
            "max": float(values.max()) if count else -np.inf,
        })
    return {"stats": stats, "nonfinite": nonfinite, "changed": changed, "digests": digests}


def combine_stats(parts: Sequence[dict[str, float]]) -> dict[str, float]:
    """Merge count/mean/m2/min/max of disjoint parts (Chan, Golub & LeVeque pairwise rule)."""
    count, mean, m2 = 0, 0.0, 0.0
    lo, hi = np.inf, -np.inf
    for p in parts:
        if p["count"] == 0:
            continue
        total = count + p["count"]
        delta = p["mean"] - mean
        mean += delta * p["count"] / total
        m2 += p["m2"] + delta ** 2 * count * p["count"] / total
        count = total
        lo, hi = min(lo, p["min"]), max(hi, p["max"])
    return {"count": count, "mean": mean, "m2": m2, "min": lo, "max": hi,
            "std": float(np.sqrt(m2 / count)) if count else 0.0}


def judge_summaries(summaries: Sequence[dict[str, Any]], sample_files: Sequence[str],
                    sample_labels: Sequence[str], variables: Sequence[str], missing: str,
                    allow_duplicates: bool) -> list[Problem]:
    """Problems found by :func:`block_summary` over all blocks (in sample order)."""
    problems: list[Problem] = []
    nonfinite = np.concatenate([s["nonfinite"] for s in summaries])
    changed = np.concatenate([s["changed"] for s in summaries])
    digests = [d for s in summaries for d in s["digests"]]
    var_label = ", ".join(variables)
    for i in np.flatnonzero(nonfinite):
        problems.append(Problem(
            sample_files[i], var_label, f"{int(nonfinite[i])} NaN/inf point(s) in {sample_labels[i]}",
            "field values must be finite outside a declared missing-value mask",
            "fix the run, or declare missing: fixed-mask (a mask shared by all runs) or "
            "missing: fill with fill_value"))
    if missing == "fixed-mask":
        for i in np.flatnonzero(changed):
            problems.append(Problem(
                sample_files[i], var_label,
                f"{int(changed[i])} point(s) of {sample_labels[i]} missing differently from the "
                f"first sample ({sample_files[0]})",
                "with missing: fixed-mask the missing-value mask must be the same in every run",
                "use missing: fill with a fill_value if missing values change from run to run"))
    if not allow_duplicates:
        problems.extend(_duplicate_files(digests, sample_files, var_label))
    return problems


def _duplicate_files(digests: Sequence[str], sample_files: Sequence[str],
                     var_label: str) -> list[Problem]:
    """Files whose samples are identical, in order, to those of an earlier file.

    Duplicates are judged per file (a run), not per sample: samples of binary or
    deterministic kinds may legitimately repeat within and across runs.
    """
    per_file: dict[str, list[str]] = {}
    for digest, name in zip(digests, sample_files):
        per_file.setdefault(name, []).append(digest)
    first_seen: dict[str, str] = {}
    problems = []
    for name, parts in per_file.items():
        key = hashlib.blake2b("".join(parts).encode(), digest_size=16).hexdigest()
        if key in first_seen:
            problems.append(Problem(
                name, var_label, f"{len(parts)} sample(s) identical to those of {first_seen[key]}",
                "runs must be distinct (a duplicate run would be counted twice in training "
                "and could land in both the training and the held-out split)",
                "remove the duplicate file, or set allow_duplicates: true"))
        else:
            first_seen[key] = name
    return problems
