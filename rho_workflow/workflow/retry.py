"""One retry loop for training tasks: resubmit from the last checkpoint until attempts run out.

Single-worker training and data-parallel groups fail the same way (a lost worker, a failed
step, a collective timeout) and recover the same way: the next attempt resumes from the
checkpoint that the failed one wrote last.
"""

from __future__ import annotations

import logging
from typing import Callable, TypeVar

__all__ = ["AttemptFailed", "with_retries"]

logger = logging.getLogger("rho_workflow")
T = TypeVar("T")


class AttemptFailed(Exception):
    """One attempt failed; the message says how (the loop collects them)."""


def with_retries(attempt: Callable[[int], T], max_attempts: int, what: str,
                 error: Callable[[str], Exception]) -> T:
    """Call ``attempt(k)`` for ``k = 0, 1, ...`` until one returns; after ``max_attempts``
    failures (each an :class:`AttemptFailed`) raise ``error(message listing every attempt)``."""
    failures = []
    for k in range(max_attempts):
        try:
            return attempt(k)
        except AttemptFailed as exc:
            failures.append(f"attempt {k + 1}: {exc}")
            logger.warning("%s failed (%s); %s", what, exc,
                           "resubmitting from the last checkpoint" if k + 1 < max_attempts
                           else "no attempts left")
    raise error(f"{what} failed on every attempt:\n  " + "\n  ".join(failures))
