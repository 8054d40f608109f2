"""Observations of physical fields mapped to the network's normalized units, for conditioned sampling.

The glue between :mod:`rho_workflow.data.observations` (rows of ``A`` in physical units) and
:mod:`rho_workflow.diffusion.posterior` (the conditioned denoiser on normalized tensors).

Units: each observed value ``y`` goes through the model's transform ``T`` (``z = T(y)``) and
its error through the transform's slope (``std_z = |T'(y)| std``). For an affine transform
(``standardize``) and rows whose weights sum to 1 (every kind here) this is exact. For a
non-affine one (``log-standardize``) known values are still exact (``T`` is elementwise),
while noisy values and station interpolation are taken to first order (the delta method, and
interpolation in the normalized field), which is accurate while ``std`` is small against
``y`` and the field varies little between neighbouring cells.

A general ``log r`` is given in physical units: ``log_r(x)`` receives the physical field
``T^-1(D)`` as a float64 tensor ``(B, C, *spatial)`` and returns ``(B,)``.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from rho_workflow.atomic import file_sha256
from rho_workflow.data.labels import default_labels
from rho_workflow.data.observations import ObservationError, ObservationRows, observation_rows, read_observations
from rho_workflow.data.transforms import Affine, Chain, Identity, Log, MinMax, PerChannel, Transform
from rho_workflow.diffusion.posterior import LinearObservation

__all__ = ["prepare_observations", "normalized_rows", "torch_inverse", "model_labels"]


def model_labels(model: Any) -> dict:
    meta = model.metadata or {}
    return meta if "spatial" in meta and "fields" in meta else default_labels(_grid_shape(model))


def _grid_shape(model: Any) -> tuple[int, ...]:
    return (1, *model.field_shape) if model.is_points else tuple(model.field_shape)


def normalized_rows(transform: Transform, rows: ObservationRows, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """``(T(y), |T'(y)| std)`` of each row, through the row's channel of ``transform``."""
    m = rows.m
    grid = np.ones((m, channels))
    grid[np.arange(m), rows.channel] = rows.values
    try:
        z = transform.forward(grid)[np.arange(m), rows.channel]
        slope = np.exp(transform.log_abs_derivative(grid))[np.arange(m), rows.channel]
    except ValueError as exc:
        raise ObservationError(what=f"observed values outside the model's transform ({exc})", where="observe",
                               rule="observations lie in the transform's domain (positive for a log transform)",
                               fix="drop non-positive observations of a log-transformed field") from None
    if not (np.isfinite(z).all() and np.isfinite(slope).all()):
        j = int(np.argmax(~(np.isfinite(z) & np.isfinite(slope))))
        raise ObservationError(what=f"observed value {rows.values[j]:g} maps to a non-finite normalized value",
                               where="observe", rule="observations lie in the transform's domain",
                               fix="drop that observation")
    return z, slope * rows.std


def prepare_observations(model: Any, observe: Any) -> tuple[LinearObservation | None, Callable | None]:
    """The linear observation (normalized units) and the physical-units ``log r`` of ``observe``.

    ``observe`` is one observation or a list: :class:`~rho_workflow.data.observations.KnownRegion`,
    ``NoisyField``, ``Stations``, a callable ``log r(x)``, or a path / xarray Dataset in the
    file convention of :func:`~rho_workflow.data.observations.read_observations`.
    """
    if observe is None:
        return None, None
    items: Sequence[Any] = observe if isinstance(observe, (list, tuple)) else [observe]
    labels = model_labels(model)
    linear, log_rs = [], []
    for item in items:
        if isinstance(item, Mapping) and "path" in item:  # a file named by a config (pipeline sampling)
            if item.get("sha256") and file_sha256(item["path"]) != item["sha256"]:
                raise ObservationError(what=f"observation file {item['path']} changed since the sweep was planned",
                                       where=item.get("where", "sampling.conditioning.observations"),
                                       rule="a sweep's observations stay the same for all its chunks",
                                       fix="restore the file, or rerun the sample stage without --resume")
            linear.extend(read_observations(item["path"], labels, variable=item.get("variable"),
                                            where=item.get("where", "sampling.conditioning.observations")))
        elif callable(item) and not isinstance(item, type):
            log_rs.append(item)
        elif _is_file_like(item):
            linear.extend(read_observations(item, labels))
        else:
            linear.append(item)
    lin = None
    if linear:
        shape = _grid_shape(model)
        valid = None if model.mask is None else np.asarray(model.mask, bool)
        rows = observation_rows(linear, shape, labels, valid)
        z, std = normalized_rows(model.transform, rows, shape[0])
        lin = LinearObservation.build(rows.index, rows.weight, z, std, **rows.info)
    return lin, (_physical_log_r(model.transform, _grid_shape(model), log_rs) if log_rs else None)


def _physical_log_r(transform: Transform, shape: tuple[int, ...], log_rs: list[Callable]) -> Callable:
    """``log r`` of the normalized denoised field: the users' functions of the physical field, summed."""
    def log_r(d: torch.Tensor) -> torch.Tensor:
        x = torch_inverse(transform, d.reshape(d.shape[0], *shape))
        return sum(f(x) for f in log_rs)
    return log_r


def _is_file_like(item: Any) -> bool:
    if isinstance(item, (str,)) or hasattr(item, "__fspath__"):
        return True
    return type(item).__name__ == "Dataset" and hasattr(item, "data_vars")


def torch_inverse(transform: Transform, z: torch.Tensor) -> torch.Tensor:
    """``T^-1(z)`` on a differentiable tensor ``(B, C, *spatial)`` (channel axis 1)."""
    if isinstance(transform, Identity):
        return z
    if isinstance(transform, Log):
        return torch.exp(z)
    if isinstance(transform, MinMax):
        return (z + 1.0) * 0.5 * (transform.hi - transform.lo) + transform.lo
    if isinstance(transform, Affine):
        shape = [1] * z.ndim
        shape[transform.axis % z.ndim] = -1
        scale = torch.tensor(transform.scale, dtype=z.dtype, device=z.device).reshape(shape)
        shift = torch.tensor(transform.shift, dtype=z.dtype, device=z.device).reshape(shape)
        return z * scale + shift
    if isinstance(transform, Chain):
        for step in reversed(transform.steps):
            z = torch_inverse(step, z)
        return z
    if isinstance(transform, PerChannel):
        axis = transform.axis % z.ndim
        parts = [torch_inverse(t, z.narrow(axis, c, 1)) for c, t in enumerate(transform.steps)]
        return torch.cat(parts, dim=axis)
    raise TypeError(f"no torch inverse for transform {type(transform).__name__}")
