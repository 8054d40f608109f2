"""Log-likelihood of physical fields under a trained model, in the user's data units.

The glue between a trained model (anything with ``schedule``, ``transform``,
``param_space``, ``field_shape``, ``mask`` and ``_denoiser_for_sampling()``, such as
:class:`rho_workflow.api.RhoModel`) and the modelling core
(:func:`rho_workflow.diffusion.likelihood.log_prob`). Fields are normalized by the model's
transform ``y = T(x)`` and the change of variables adds its log-Jacobian:
``log p_x(x) = log p_y(T(x)) + sum_i log |T'(x_i)|``, so values are comparable across
transforms (a ``log`` transform gives the density of the field itself, not of its log).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from rho_workflow.data.transforms import Chain, Log, PerChannel, Transform
from rho_workflow.diffusion.likelihood import UNITS, BoundResult, LogProb, log_prob, to_unit
from rho_workflow.diffusion.random import BatchGenerator, derive_seed
from rho_workflow.errors import RhoWorkflowError

__all__ = ["FieldLogProb", "field_log_prob", "LogProbInputError"]


class LogProbInputError(RhoWorkflowError, ValueError):
    """Fields or parameters given to :func:`field_log_prob` break a rule (what, rule and fix in the message)."""


@dataclass(frozen=True, eq=False)
class FieldLogProb:
    """Per-field log-likelihoods in data units.

    Attributes
    ----------
    values : ndarray (N,)
        ``log p(x)`` (or the bound K) of each field in ``unit``, with the transform's
        log-Jacobian included.
    stderr : ndarray (N,) or None
        Monte-Carlo standard error in ``unit`` (Hutchinson probes, noise draws), if any.
    unit : str
        ``nats``, ``bits`` or ``bits_per_dim``.
    method : str
        The core method (``ode-exact``, ``ode-hutchinson``, ``bound``, ``bound-mc-t``).
    dim : int
        Valid values per field (the ``dim`` of ``bits_per_dim``).
    log_jacobian : ndarray (N,)
        ``log |det dT/dx|`` in nats (already in ``values``).
    nfe_per_sample : int
        Network evaluations per field.
    wall_s : float
        Wall time of all fields, seconds.
    parts : tuple of LogProb
        The core results of each batch (per-step KL terms of the bound, ODE settings).
    """

    values: np.ndarray
    stderr: np.ndarray | None
    unit: str
    method: str
    dim: int
    log_jacobian: np.ndarray
    nfe_per_sample: int
    wall_s: float
    parts: tuple[LogProb, ...] = field(default_factory=tuple)

    @property
    def kl_per_step(self) -> np.ndarray | None:
        """Per-step KL terms ``(N, S)`` in nats (bound only; None for the ODE)."""
        if not self.parts or not isinstance(self.parts[0], BoundResult):
            return None
        return np.concatenate([p.kl for p in self.parts])


def _error(what: str, rule: str, fix: str) -> LogProbInputError:
    return LogProbInputError(what=what, where="log_prob", rule=rule, fix=fix)


def _check_shape(model: Any, fields: np.ndarray) -> np.ndarray:
    """Fields as ``(N, *field_shape)``: points ``(N, D)``; fields ``(N, *spatial)`` or ``(N, C, *spatial)``."""
    shape = tuple(model.field_shape)
    x = np.asarray(fields, dtype=np.float64)
    if len(shape) > 1 and x.ndim == len(shape) and tuple(x.shape[1:]) == shape[1:] and shape[0] == 1:
        x = x[:, None]
    if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape:
        raise _error(f"fields of shape {x.shape}", f"one field has shape {shape} (a leading batch axis first)",
                     f"pass an array of shape (N, {', '.join(map(str, shape))})")
    return x


def _log_transforms(t: Transform) -> list[Log]:
    if isinstance(t, Log):
        return [t]
    if isinstance(t, (Chain, PerChannel)):
        return [log for step in t.steps for log in _log_transforms(step)]
    return []


def _check_values(model: Any, x: np.ndarray, valid: np.ndarray) -> None:
    bad = ~np.isfinite(x) & valid
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise _error(f"{int(bad.sum())} NaN/inf values at valid points (first at index {idx})",
                     "a density is defined for finite values only", "clean the fields or mask the points")
    logs = _log_transforms(model.transform)
    if logs and not isinstance(model.transform, PerChannel):
        floor = max(t.floor for t in logs)
        low = valid & ~(x > floor)
        if low.any():
            idx = tuple(int(i) for i in np.argwhere(low)[0])
            raise _error(f"value {x[idx]:g} at index {idx} is not above the log transform's floor {floor:g}",
                         "a log transform needs positive values (above its floor)",
                         "pass positive fields, or a model fitted with transform='standardize'")


def _conditions(model: Any, params: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None,
                n: int) -> torch.Tensor | None:
    if len(model.param_space) == 0:
        return None
    if params is None:
        raise _error("no parameters given", f"the model is conditioned on {model.param_space.names}",
                     "pass params as one dict or one dict per field")
    points = [params] * n if isinstance(params, Mapping) else list(params)
    if len(points) != n:
        raise _error(f"{n} fields but {len(points)} parameter points", "one point per field (or one dict for all)",
                     "pass a single dict or a list as long as the fields")
    return torch.from_numpy(model.param_space.to_array(points))  # checks names and declared ranges


def field_log_prob(model: Any, fields: np.ndarray, params: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None,
                   method: str = "ode", unit: str = "nats", *, batch_size: int = 64, seed: int = 0,
                   seeds: Sequence[int] | None = None, step_seed: int | None = None,
                   **options: Any) -> FieldLogProb:
    """``log p(x | params)`` of physical fields: the core :func:`log_prob` plus ``log |det dT/dx|``.

    Parameters
    ----------
    model
        A trained model (see the module docstring).
    fields : ndarray
        ``(N, *spatial)`` or ``(N, C, *spatial)`` (points ``(N, D)``), physical units.
    params : dict or list of dict
        The parameter point of all fields, or one per field (checked against the declared ranges).
    method : {"ode", "bound"}
        Exact density by the probability-flow ODE, or the variational bound K.
    unit : {"nats", "bits", "bits_per_dim"}
    batch_size : int
        Fields per core call (one ODE system, or one batched network call per step).
    seed : int
        Seed of the random parts (Hutchinson probes, the bound's noise): field ``i`` uses
        ``derive_seed(seed, "log_prob", i)``, independent of ``batch_size``.
    seeds : sequence of int, optional
        One seed per field instead (equal seeds: the same noise, common random numbers).
    step_seed : int, optional
        With the bound's ``t_samples``: every batch draws its steps from a generator seeded
        with ``step_seed``, so all fields see the same steps whatever the batching.
    **options
        Options of the core method (``rtol``, ``atol``, ``n_probes``, ``n_noise``, ...).
    """
    if unit not in UNITS:
        raise _error(f"unknown unit {unit!r}", f"one of {list(UNITS)}", "choose a valid unit")
    x = _check_shape(model, fields)
    spatial_mask = None if model.mask is None else np.asarray(model.mask, dtype=bool)
    valid = np.ones(x.shape[1:], bool) if spatial_mask is None else np.broadcast_to(spatial_mask, x.shape[1:])
    _check_values(model, x, np.broadcast_to(valid, x.shape))
    cond = _conditions(model, params, x.shape[0])
    safe = np.where(valid, x, 1.0) if spatial_mask is not None else x
    z = np.where(valid, model.transform.forward(safe), 0.0)
    log_jac = (model.transform.log_abs_derivative(safe) * valid).reshape(x.shape[0], -1).sum(1)
    denoiser, device = model._denoiser_for_sampling(), getattr(model, "device", "cpu")
    mask_t = None if spatial_mask is None else torch.from_numpy(np.array(valid)).to(device)
    if seeds is not None and len(seeds) != x.shape[0]:
        raise _error(f"{len(seeds)} seeds for {x.shape[0]} fields", "one seed per field", "pass len(fields) seeds")
    all_seeds = list(seeds) if seeds is not None else [derive_seed(seed, "log_prob", i) for i in range(x.shape[0])]
    start, parts = time.perf_counter(), []
    for lo in range(0, x.shape[0], batch_size):
        hi = min(lo + batch_size, x.shape[0])
        gen = BatchGenerator(all_seeds[lo:hi], device="cpu")
        if step_seed is not None:
            options["step_generator"] = torch.Generator().manual_seed(int(step_seed))
        zb = torch.from_numpy(z[lo:hi]).to(device)
        cb = None if cond is None else cond[lo:hi].to(device)
        parts.append(log_prob(denoiser, model.schedule, zb, cb, method=method, mask=mask_t, generator=gen,
                              **options))
    return _assemble(parts, log_jac, unit, time.perf_counter() - start)


def _assemble(parts: list[LogProb], log_jac: np.ndarray, unit: str, wall_s: float) -> FieldLogProb:
    dim = parts[0].dim
    nats = np.concatenate([p.values for p in parts]) + log_jac
    errs = [p.stderr for p in parts]
    stderr = None if any(e is None for e in errs) else to_unit(np.concatenate(errs), unit, dim)
    return FieldLogProb(values=to_unit(nats, unit, dim), stderr=stderr, unit=unit, method=parts[0].method,
                        dim=dim, log_jacobian=log_jac, nfe_per_sample=max(p.nfe for p in parts),
                        wall_s=wall_s, parts=tuple(parts))

