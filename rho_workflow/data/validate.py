"""Validation problems of a sweep, collected and reported together.

Every check of the data layer appends a :class:`Problem` -- file, variable, value, rule and
fix -- instead of stopping at the first; :func:`raise_if_problems` raises one
:class:`DataValidationError` listing all of them. Checks that need the data values (NaN or
inf outside a mask, a mask that changes from run to run, duplicate samples) are computed in
the preprocessing graph by :func:`block_summary` and judged here by :func:`judge_summaries`.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from rho_workflow.errors import RhoWorkflowError

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


class DataValidationError(RhoWorkflowError, ValueError):
    """The sweep breaks one or more rules; nothing was written. ``problems`` lists each."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems = list(problems)
        lines = [str(p) for p in self.problems[:MAX_LISTED]]
        if len(self.problems) > MAX_LISTED:
            lines.append(f"... and {len(self.problems) - MAX_LISTED} more problems")
        super().__init__(f"the sweep failed validation ({len(self.problems)} problem(s); "
                         "nothing was written):\n  " + "\n  ".join(lines))


def short_values(values: Any) -> str:
    """A short text of an array of values for a message (first, second, ..., last)."""
    values = np.asarray(values).ravel()
    if values.size <= 4:
        return str(values.tolist())
    return f"[{values[0]}, {values[1]}, ..., {values[-1]}] ({values.size} values)"


def raise_if_problems(problems: Sequence[Problem]) -> None:
    if problems:
        raise DataValidationError(problems)


def block_summary(block: np.ndarray, train: np.ndarray, reference_missing: np.ndarray | None,
                  log_channels: Sequence[int], floor: float,
                  pre: Any = None) -> dict[str, Any]:
    """Statistics and checks of one block of samples, ``block`` of shape ``(n, C, *spatial)``.

    Returns per channel, over training samples and valid points, the count, mean, sum of
    squared deviations (``m2``), min and max of the values after the log step of the
    transform (or of ``pre[c].forward``, the bounds transform of channel ``c``; Chan et al.
    1979 pairwise-combinable moments); per sample the number of
    non-finite points outside the reference mask, the number of points whose missingness
    differs from the reference, the number of finite values below the log ``floor`` in the
    log channels (outside the log's domain, or raised to the floor), and a content digest
    (duplicate detection).
    """
    block = np.asarray(block)
    n, channels = block.shape[:2]
    nonfinite = np.zeros(n, dtype=np.int64)
    changed = np.zeros(n, dtype=np.int64)
    below_floor = np.zeros(n, dtype=np.int64)
    digests = []
    parts: list[list[dict[str, float]]] = [[] for _ in range(channels)]
    for i in range(n):  # one sample at a time: memory stays a few copies of one field
        sample = np.ascontiguousarray(block[i])
        digests.append(_digest(sample))
        finite = np.isfinite(sample)
        if reference_missing is None:
            nonfinite[i] = sample.size - np.count_nonzero(finite)
        else:
            ref = np.broadcast_to(reference_missing, sample.shape)
            nonfinite[i] = np.count_nonzero(~finite & ~ref)
            changed[i] = np.count_nonzero(np.isnan(sample) != ref)
        for c in log_channels:
            below_floor[i] += np.count_nonzero(finite[c] & (sample[c] < floor))
        if not train[i]:
            continue
        for c in range(channels):
            values = sample[c].astype(np.float64).ravel()
            if not finite[c].all():
                values = values[finite[c].ravel()]
            if pre and c in pre:
                values = pre[c].forward(values)
            elif c in log_channels:
                np.log(np.maximum(values, floor, out=values), out=values)
            parts[c].append(_moments(values))
    stats = [combine_stats(p) if p else _moments(np.zeros(0)) for p in parts]
    return {"stats": stats, "nonfinite": nonfinite, "changed": changed,
            "below_floor": below_floor, "digests": digests}


def _digest(sample: np.ndarray) -> str:
    """64-bit content checksum (CRC-32 and Adler-32 of the bytes; ~1.5 GB/s): equal samples
    have equal digests, distinct ones collide with probability ~2**-64."""
    view = memoryview(sample).cast("B")
    return f"{zlib.crc32(view):08x}{zlib.adler32(view):08x}"


def _moments(values: np.ndarray) -> dict[str, float]:
    """count, mean, m2 = sum (x - mean)**2, min, max of a float64 vector (overwritten).

    Shifted sums (shift = mean of the first values) keep ``m2`` accurate when the mean is
    large compared with the spread (e.g. temperatures in K)."""
    count = values.size
    if not count:
        return {"count": 0, "mean": 0.0, "m2": 0.0, "min": np.inf, "max": -np.inf}
    lo, hi = float(values.min()), float(values.max())
    shift = float(values[:1024].mean())
    values -= shift
    total = float(values.sum())
    m2 = max(float(values @ values) - total * total / count, 0.0)
    return {"count": int(count), "mean": shift + total / count, "m2": m2, "min": lo, "max": hi}


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
                    allow_duplicates: bool, log_variables: Sequence[str] = (),
                    floor: float = 1e-12, clamp: bool = False) -> list[Problem]:
    """Problems found by :func:`block_summary` over all blocks (in sample order).

    Values below the log floor are problems unless ``clamp`` declares that they are raised
    to the floor (the preprocess stage then counts them)."""
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
    if not clamp and log_variables:
        below = np.concatenate([s["below_floor"] for s in summaries])
        for i in np.flatnonzero(below):
            problems.append(Problem(
                sample_files[i], ", ".join(log_variables),
                f"{int(below[i])} value(s) below the floor {floor:g} in {sample_labels[i]}",
                "where transform.log applies, values must be >= transform.floor (the log of "
                "a value <= 0 is undefined; a smaller one would be raised to the floor)",
                "fix the run, lower transform.floor, or set transform.clamp: true to raise "
                "them to the floor (the count is reported)"))
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
