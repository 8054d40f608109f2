"""The package's errors: one base class, and the one message format users see.

Every error that a user can cause (a config key, a data file, a checkpoint, an API argument,
an output path) derives from :class:`RhoWorkflowError`. Its message says *what* is wrong,
*where* (file, key path or argument), the *rule* it breaks and the *fix*; the command line
prints it as one message and exits 2 (``--debug`` shows the traceback). Subclasses keep the
built-in class a caller would expect (``ValueError`` for bad values, ``RuntimeError`` for a
failed run) as a second base, so ``except ValueError`` still catches them.
"""

from __future__ import annotations

from typing import Sequence

__all__ = ["RhoWorkflowError", "ConfigError", "RunInterrupted", "compose"]


def compose(what: str, where: str | None = None, rule: str | None = None,
            fix: str | None = None) -> str:
    """``"where: what (rule: ...); fix: ..."`` with the absent parts left out."""
    text = f"{where}: {what}" if where else what
    if rule:
        text += f" (rule: {rule})"
    if fix:
        text += f"; fix: {fix}"
    return text


class RhoWorkflowError(Exception):
    """Base class of every error the package raises for its user.

    Build it from a finished message, or from its parts: ``RhoWorkflowError(what=...,
    where=..., rule=..., fix=...)``.
    """

    def __init__(self, message: str | None = None, *, what: str | None = None,
                 where: str | None = None, rule: str | None = None, fix: str | None = None):
        if message is None:
            message = compose(what or "invalid input", where, rule, fix)
        super().__init__(message)
        self.what, self.where, self.rule, self.fix = what, where, rule, fix


class ConfigError(RhoWorkflowError, ValueError):
    """A configuration (pipeline file, a section, a cluster override) breaks its schema.

    ``problems`` lists every problem found, each ``"key.path: what ... fix"``; they are
    collected, not stopped at the first.
    """

    def __init__(self, problems: Sequence[str], source: str | None = None,
                 what: str = "pipeline config"):
        self.problems = list(problems)
        self.source = source
        where = f" in {source}" if source else ""
        super().__init__(f"invalid {what}{where}:\n  " + "\n  ".join(self.problems), where=source)


class RunInterrupted(RhoWorkflowError, RuntimeError):
    """The run was asked to stop (SIGTERM at the end of a batch job's walltime) and did: what
    was finished is kept (checkpoint, parts); ``--resume`` continues it."""

    def __init__(self, message: str, step: int | None = None):
        super().__init__(message)
        self.step = step
