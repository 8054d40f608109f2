"""data layer (see docs/contracts.md): netCDF sweeps in, validated training stores out.

The public names are imported lazily, so that ``import rho_workflow.data.transforms`` stays
light (no xarray or Dask):

- :class:`DataConfig` (the pipeline's ``data:`` section), :func:`preprocess` (the Dask graph)
  -> :class:`StoreInfo`; :func:`open_store` -> :class:`TrainingStore`;
- :data:`UNITS` (the project's pint registry), :func:`parse_units`, :func:`linear_conversion`;
- :class:`DataValidationError` / :class:`ConfigError` (every problem listed);
- :func:`write_sweep` (synthetic simulation sweeps, ``rho-workflow make-data``).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DataConfig": "config", "ConfigError": "config",
    "preprocess": "store", "open_store": "store", "StoreInfo": "store",
    "TrainingStore": "store",
    "UNITS": "units", "UnitsError": "units", "parse_units": "units",
    "linear_conversion": "units", "convert": "units",
    "DataValidationError": "validate", "Problem": "validate",
    "plan_sweep": "ingest", "write_sweep": "make_data",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"rho_workflow.data.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'rho_workflow.data' has no attribute {name!r}")
