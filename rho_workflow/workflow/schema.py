"""Kept for imports of ``ConfigError`` from here; sections are pydantic models
(:mod:`rho_workflow.sections`), and the error lives in :mod:`rho_workflow.errors`."""

from rho_workflow.errors import ConfigError

__all__ = ["ConfigError"]
