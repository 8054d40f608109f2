"""Physical parameters inferred from a field: ``p(theta | x) ~ p(x | theta) p(theta)``.

The likelihood is the model's conditional log-likelihood of the field
(:func:`rho_workflow.training.likelihood.field_log_prob`): the bound K (default; Monte Carlo
over stratified steps, as the per-timestep bound terms of Diffusion-HMC, Mudur et al. 2024)
or the probability-flow ODE. Every parameter value of one field is scored with the same
noise and steps (common random numbers), so that the Monte-Carlo error of K, which is large,
nearly cancels in the *differences* across parameters that shape the posterior.

Two methods:

* ``grid`` (up to 3 continuous parameters): a coarse grid over the prior finds the region
  holding the posterior (log posterior within ``region_nats`` of its maximum), and a fine grid
  over it gives the normalized posterior, its marginals and draws. Categorical parameters are
  an axis of the grid, and their posterior probabilities are reported as a table.
* ``mcmc``: the affine-invariant ensemble sampler of emcee (Foreman-Mackey et al. 2013) over
  the continuous parameters (categorical ones fixed).

Priors are uniform on the declared range by default; per parameter, ``(low, high)`` or
``{"low", "high", "kind": "uniform" | "log-uniform"}`` narrows it, a number fixes it and a list
restricts a categorical one. The result is an xarray Dataset with parameter coordinates in
their units, the (log) posterior, draws, and mean, standard deviation and 68%/95% intervals.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from rho_workflow.errors import RhoWorkflowError
from rho_workflow.params import ParamSpace

__all__ = ["infer_field", "InferenceError", "PriorAxis", "parse_prior", "infer_parameters", "model_log_likelihood",
           "grid_posterior", "mcmc_posterior", "METHODS"]

METHODS = ("grid", "mcmc")
LN2 = math.log(2.0)


class InferenceError(RhoWorkflowError, ValueError):
    """A parameter-inference request breaks a rule (prior, field, method)."""


def _error(what: str, rule: str, fix: str) -> InferenceError:
    return InferenceError(what=what, where="infer", rule=rule, fix=fix)


@dataclass(frozen=True)
class PriorAxis:
    """The prior of one parameter: ``uniform``/``log-uniform`` on ``[low, high]``, ``fixed`` or ``categorical``."""

    name: str
    units: str
    kind: str
    low: float = math.nan
    high: float = math.nan
    values: tuple = ()

    @property
    def free(self) -> bool:
        return self.kind in ("uniform", "log-uniform")

    def to_coord(self, u: np.ndarray) -> np.ndarray:
        """Values at prior coordinates ``u`` in [0, 1] (uniform in the value or in its log)."""
        if self.kind == "log-uniform":
            return np.exp(np.log(self.low) + u * (np.log(self.high) - np.log(self.low)))
        return self.low + u * (self.high - self.low)

    def to_unit(self, v: np.ndarray) -> np.ndarray:
        if self.kind == "log-uniform":
            return (np.log(v) - np.log(self.low)) / (np.log(self.high) - np.log(self.low))
        return (v - self.low) / (self.high - self.low)


def parse_prior(space: ParamSpace, prior: Mapping[str, Any] | None) -> list[PriorAxis]:
    """One :class:`PriorAxis` per parameter of ``space``; every problem is reported together."""
    prior = dict(prior or {})
    problems = [f"prior names unknown parameter {k!r} (the model's are {space.names})"
                for k in prior if k not in space.names]
    axes = []
    for p in space.params:
        spec = prior.get(p.name)
        try:
            axes.append(_axis(p, spec))
        except InferenceError as exc:
            problems.append(str(exc))
    if problems:
        raise InferenceError(what="invalid prior:\n  " + "\n  ".join(problems), where="infer")
    return axes


def _axis(p: Any, spec: Any) -> PriorAxis:
    if p.kind == "categorical":
        values = tuple(p.values) if spec is None else (tuple(spec) if isinstance(spec, (list, tuple)) else (spec,))
        bad = [v for v in values if v not in p.values]
        if bad or not values:
            raise _error(f"prior of {p.name!r} lists {bad or 'no values'}",
                         f"a categorical prior is a subset of the trained values {list(p.values)}",
                         "list some of the trained values")
        return PriorAxis(p.name, p.units, "categorical" if len(values) > 1 else "fixed", values=values)
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        _inside(p, float(spec), float(spec))
        return PriorAxis(p.name, p.units, "fixed", float(spec), float(spec))
    kind, low, high = "uniform", p.low, p.high
    if isinstance(spec, Mapping):
        kind = spec.get("kind", "uniform")
        low, high = spec.get("low", p.low), spec.get("high", p.high)
    elif isinstance(spec, (list, tuple)) and len(spec) == 2:
        low, high = spec
    elif spec is not None:
        raise _error(f"prior of {p.name!r} is {spec!r}",
                     "a prior is (low, high), {'low', 'high', 'kind'}, or a number (fixed)",
                     f"write e.g. {{'{p.name}': ({p.low}, {p.high})}}")
    if kind not in ("uniform", "log-uniform"):
        raise _error(f"prior kind {kind!r} of {p.name!r}", "kind is 'uniform' or 'log-uniform'", "choose one")
    low, high = float(low), float(high)
    if not low < high:
        raise _error(f"prior of {p.name!r} is [{low}, {high}]", "low < high", "widen the range, or give a number to fix it")
    if kind == "log-uniform" and low <= 0:
        raise _error(f"log-uniform prior of {p.name!r} starts at {low}", "a log-uniform prior needs low > 0",
                     "use kind 'uniform' or a positive low")
    _inside(p, low, high)
    return PriorAxis(p.name, p.units, kind, low, high)


def _inside(p: Any, low: float, high: float) -> None:
    if low < p.low or high > p.high:
        raise _error(f"prior of {p.name!r} spans [{low:g}, {high:g}] {p.units}",
                     f"a prior lies within the trained range [{p.low:g}, {p.high:g}] {p.units} "
                     "(the model is not a likelihood outside it)",
                     "narrow the prior to the trained range")


# -- the likelihood of one field ---------------------------------------------------------------

def model_log_likelihood(model: Any, field: np.ndarray, *, method: str = "bound", seed: int = 0,
                         batch_size: int = 64, t_samples: int = 64, n_noise: int = 2, antithetic: bool = True,
                         **options: Any) -> Callable[[list[dict]], np.ndarray]:
    """``loglik(points) -> (len(points),)`` nats: the model's ``log p(field | point)`` with common random numbers."""
    from rho_workflow.training.likelihood import field_log_prob

    x = np.asarray(field, dtype=np.float64)
    if method == "bound":
        options = {"t_samples": t_samples, "stratified": True, "n_noise": n_noise, "antithetic": antithetic,
                   **options}
    calls = {"n": 0, "nfe": 0}

    def loglik(points: list[dict]) -> np.ndarray:
        if not points:
            return np.zeros(0)
        fields = np.broadcast_to(x, (len(points), *x.shape))
        res = field_log_prob(model, fields, points, method=method, batch_size=batch_size,
                             seeds=[seed] * len(points), step_seed=seed if method == "bound" else None, **options)
        calls["n"] += len(points)
        calls["nfe"] += res.nfe_per_sample * len(points)
        return np.asarray(res.values, dtype=np.float64)

    loglik.calls = calls  # type: ignore[attr-defined]
    return loglik


# -- grid ------------------------------------------------------------------------------------

def _points(axes: list[PriorAxis], grids: dict[str, np.ndarray]) -> tuple[list[dict], tuple[int, ...]]:
    names = [a.name for a in axes if a.kind != "fixed"]
    mesh = np.meshgrid(*[np.arange(len(grids[n])) for n in names], indexing="ij")
    shape = mesh[0].shape if mesh else ()
    flat = [m.reshape(-1) for m in mesh]
    points = []
    for k in range(int(np.prod(shape)) if shape else 1):
        pt = {}
        for a in axes:
            if a.kind == "fixed":
                pt[a.name] = a.values[0] if a.values else a.low
            else:
                v = grids[a.name][flat[names.index(a.name)][k]]
                pt[a.name] = v.item() if isinstance(v, np.generic) else v
        points.append(pt)
    return points, shape


def _axis_grid(a: PriorAxis, n: int, u_lo: float = 0.0, u_hi: float = 1.0) -> np.ndarray:
    """``n`` cell centres of ``[u_lo, u_hi]`` of the prior coordinate (values)."""
    u = u_lo + (np.arange(n) + 0.5) / n * (u_hi - u_lo)
    return a.to_coord(u)


def grid_posterior(loglik: Callable[[list[dict]], np.ndarray], axes: list[PriorAxis], *, n_grid: int = 24,
                   n_coarse: int = 10, region_nats: float = 15.0, n_draws: int = 4000,
                   seed: int = 0) -> dict[str, Any]:
    """Posterior on a grid (see the module docstring); returns the arrays the Dataset is built from."""
    free = [a for a in axes if a.free]
    if len(free) > 3:
        raise _error(f"{len(free)} free continuous parameters", "the grid method takes up to 3",
                     "use method='mcmc', or fix some parameters in the prior")
    grids = {a.name: np.asarray(a.values, dtype=object) for a in axes if a.kind == "categorical"}
    box = {a.name: (0.0, 1.0) for a in free}
    coarse = None
    if free and n_coarse:
        grids.update({a.name: _axis_grid(a, n_coarse) for a in free})
        points, shape = _points(axes, grids)
        lp = loglik(points).reshape(shape)
        coarse = {"grids": {k: v.copy() for k, v in grids.items()}, "log_likelihood": lp}
        keep = lp >= np.nanmax(lp) - region_nats
        names = [a.name for a in axes if a.kind != "fixed"]
        for a in free:
            ax = names.index(a.name)
            hit = np.flatnonzero(keep.any(axis=tuple(i for i in range(keep.ndim) if i != ax)))
            lo, hi = max(hit.min() - 1, 0), min(hit.max() + 2, n_coarse)  # one coarse cell of margin
            box[a.name] = (lo / n_coarse, hi / n_coarse)
    grids.update({a.name: _axis_grid(a, n_grid, *box[a.name]) for a in free})
    points, shape = _points(axes, grids)
    ll = loglik(points).reshape(shape)
    # prior mass of each cell: uniform in the prior coordinate, cells of equal width per axis
    # (categorical values equally likely); a prior axis's box width scales every cell alike
    logpost = ll - np.nanmax(ll)
    w = np.exp(logpost)
    w = w / w.sum()
    rng = np.random.default_rng(seed)
    names = [a.name for a in axes if a.kind != "fixed"]
    cell = rng.choice(w.size, size=n_draws, p=w.reshape(-1))
    idx = np.unravel_index(cell, shape)
    draws = {}
    for a in axes:
        if a.kind == "fixed":
            continue
        i = idx[names.index(a.name)]
        if a.free:
            lo, hi = box[a.name]
            width = (hi - lo) / n_grid
            u = lo + (i + rng.uniform(size=n_draws)) * width  # uniform within the cell
            draws[a.name] = a.to_coord(u)
        else:
            draws[a.name] = np.asarray(grids[a.name], dtype=object)[i]
    return {"grids": grids, "shape": shape, "names": names, "log_likelihood": ll,
            "log_mass": np.log(np.maximum(w, 1e-300)), "draws": draws, "box": box, "coarse": coarse}


# -- MCMC ------------------------------------------------------------------------------------

def mcmc_posterior(loglik: Callable[[list[dict]], np.ndarray], axes: list[PriorAxis], *, n_walkers: int | None = None,
                   n_steps: int = 400, burn: int | None = None, seed: int = 0,
                   n_init: int = 64) -> dict[str, Any]:
    """emcee ensemble sampler over the free continuous parameters, in the prior coordinate ``u in [0, 1]``."""
    import emcee

    if any(a.kind == "categorical" for a in axes):
        names = [a.name for a in axes if a.kind == "categorical"]
        raise _error(f"categorical parameters {names} left free", "mcmc samples continuous parameters",
                     "fix them in the prior (e.g. {'%s': value}) or use method='grid'" % names[0])
    free = [a for a in axes if a.free]
    if not free:
        raise _error("no free parameter", "mcmc needs at least one free continuous parameter", "widen a prior")
    ndim = len(free)
    n_walkers = int(n_walkers or max(16, 4 * ndim))
    burn = n_steps // 2 if burn is None else int(burn)
    if not 0 <= burn < n_steps:
        raise _error(f"burn={burn} with n_steps={n_steps}", "0 <= burn < n_steps", "lower burn")
    fixed = {a.name: (a.values[0] if a.values else a.low) for a in axes if a.kind == "fixed"}

    def log_prob(u: np.ndarray) -> np.ndarray:
        u = np.atleast_2d(u)
        out = np.full(len(u), -np.inf)
        inside = ((u >= 0) & (u <= 1)).all(1)
        if inside.any():
            pts = [{**fixed, **{a.name: float(a.to_coord(row[j])) for j, a in enumerate(free)}} for row in u[inside]]
            out[inside] = loglik(pts)
        return out

    rng = np.random.default_rng(seed)
    start = rng.uniform(size=(n_init, ndim))  # the walkers start in a small ball at the best of n_init prior draws
    best = start[int(np.argmax(log_prob(start)))]
    p0 = np.clip(best + 0.02 * rng.standard_normal((n_walkers, ndim)), 1e-6, 1 - 1e-6)
    sampler = emcee.EnsembleSampler(n_walkers, ndim, log_prob, vectorize=True)
    sampler.random_state = np.random.RandomState(seed).get_state()
    sampler.run_mcmc(p0, n_steps, progress=False)
    chain = sampler.get_chain(discard=burn, flat=True)
    try:
        tau = sampler.get_autocorr_time(discard=burn, quiet=True)
    except Exception:  # emcee raises when the chain is far too short
        tau = np.full(ndim, np.nan)
    draws = {a.name: a.to_coord(chain[:, j]) for j, a in enumerate(free)}
    return {"draws": draws, "acceptance": float(np.mean(sampler.acceptance_fraction)),
            "autocorr_steps": [float(t) for t in np.atleast_1d(tau)], "n_walkers": n_walkers,
            "n_steps": n_steps, "burn": burn}


# -- the result ------------------------------------------------------------------------------

def _summary(axes: list[PriorAxis], draws: Mapping[str, np.ndarray], grid: dict | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a in axes:
        if a.free:
            d = np.asarray(draws[a.name], dtype=np.float64)
            q = np.quantile(d, [0.025, 0.16, 0.5, 0.84, 0.975])
            out[a.name] = {"units": a.units, "mean": float(d.mean()), "sd": float(d.std(ddof=1)), "median": float(q[2]),
                           "ci68": [float(q[1]), float(q[3])], "ci95": [float(q[0]), float(q[4])]}
        elif a.kind == "categorical":
            d = np.asarray(draws[a.name], dtype=object)
            probs = {str(v): float(np.mean(d == v)) for v in a.values}
            if grid is not None:  # exact table from the grid masses
                ax = grid["names"].index(a.name)
                mass = np.exp(grid["log_mass"])
                marg = mass.sum(axis=tuple(i for i in range(mass.ndim) if i != ax))
                probs = {str(v): float(p) for v, p in zip(a.values, marg)}
            out[a.name] = {"units": a.units, "probabilities": probs}
        else:
            out[a.name] = {"units": a.units, "fixed": a.values[0] if a.values else a.low}
    return out


def infer_parameters(loglik: Callable[[list[dict]], np.ndarray], space: ParamSpace, prior: Mapping[str, Any] | None = None,
                     *, method: str = "grid", seed: int = 0, attrs: Mapping[str, Any] | None = None,
                     **options: Any) -> Any:
    """The posterior of the parameters of ``space`` under ``loglik`` (nats), as an xarray Dataset.

    ``options`` go to :func:`grid_posterior` (``n_grid``, ``n_coarse``, ``region_nats``,
    ``n_draws``) or :func:`mcmc_posterior` (``n_walkers``, ``n_steps``, ``burn``).
    """
    import xarray as xr

    if method not in METHODS:
        raise _error(f"method {method!r}", f"one of {list(METHODS)}", "choose 'grid' (<= 3 parameters) or 'mcmc'")
    axes = parse_prior(space, prior)
    start = time.perf_counter()
    grid = grid_posterior(loglik, axes, seed=seed, **options) if method == "grid" else None
    mc = mcmc_posterior(loglik, axes, seed=seed, **options) if method == "mcmc" else None
    draws = (grid or mc)["draws"]
    summary = _summary(axes, draws, grid)
    calls = getattr(loglik, "calls", {})
    data_vars: dict[str, Any] = {}
    coords: dict[str, Any] = {}
    n_draws = len(next(iter(draws.values()))) if draws else 0
    for a in axes:
        if a.kind == "fixed":
            continue
        unit_attrs = {"units": a.units, "long_name": f"posterior draws of {a.name}"}
        values = np.asarray(draws[a.name], dtype=np.float64 if a.free else object)
        data_vars[f"{a.name}_draws"] = xr.Variable(("draw",), values.astype(str) if not a.free else values, unit_attrs)
    if grid is not None:
        dims = tuple(grid["names"])
        for a in axes:
            if a.kind == "fixed":
                continue
            vals = grid["grids"][a.name]
            coords[a.name] = xr.Variable((a.name,), np.asarray(vals, dtype=np.float64) if a.free else
                                         np.asarray(vals).astype(str),
                                         {"units": a.units, "long_name": a.name, "prior": a.kind})
        data_vars["log_likelihood"] = xr.Variable(dims, grid["log_likelihood"],
                                                  {"units": "nats", "long_name": "log p(field | parameters)"})
        data_vars["log_posterior_mass"] = xr.Variable(dims, grid["log_mass"],
                                                      {"units": "nats", "long_name": "log posterior mass of each grid cell"})
        for j, name in enumerate(dims):
            mass = np.exp(grid["log_mass"])
            marg = mass.sum(axis=tuple(i for i in range(mass.ndim) if i != j))
            data_vars[f"{name}_marginal"] = xr.Variable((name,), marg, {"units": "1",
                                                                        "long_name": f"marginal posterior mass of {name}"})
    coords["draw"] = np.arange(n_draws)
    info = {"method": method, "likelihood_calls": calls.get("n"), "network_calls": calls.get("nfe"),
            "wall_s": time.perf_counter() - start,
            "prior": {a.name: {"kind": a.kind, "low": a.low, "high": a.high, "values": list(a.values)} for a in axes}}
    if mc is not None:
        info.update({k: mc[k] for k in ("acceptance", "autocorr_steps", "n_walkers", "n_steps", "burn")})
    if grid is not None:
        info["fine_box_prior_coordinate"] = grid["box"]
    ds = xr.Dataset(data_vars, coords=coords)
    ds.attrs.update({"title": "posterior of the physical parameters", "summary": json.dumps(summary),
                     "inference": json.dumps(info, default=float), **dict(attrs or {})})
    return ds


def infer_field(model: Any, field: np.ndarray, prior: Mapping[str, Any] | None = None, *, method: str = "grid",
                likelihood: str = "bound", seed: int = 0, likelihood_options: Mapping[str, Any] | None = None,
                **options: Any) -> Any:
    """:func:`infer_parameters` for one physical field under a trained ``model`` (any object
    :func:`~rho_workflow.training.likelihood.field_log_prob` takes)."""
    from rho_workflow.training.likelihood import LogProbInputError, _check_shape

    if len(model.param_space) == 0:
        raise _error("the model has no parameters", "inference needs a conditional model", "train on a parameter sweep")
    if likelihood not in ("bound", "ode"):
        raise _error(f"likelihood {likelihood!r}", "one of ['bound', 'ode']", "choose 'bound' (fast) or 'ode' (exact)")
    try:
        x = _check_shape(model, np.asarray(field, dtype=np.float64)[None])[0]
    except LogProbInputError:
        raise _error(f"a field of shape {np.shape(field)}",
                     f"one field of the model's shape {tuple(model.field_shape)} (or without its channel axis)",
                     "pass a single field on the model's grid") from None
    loglik = model_log_likelihood(model, x, method=likelihood, seed=seed, **dict(likelihood_options or {}))
    return infer_parameters(loglik, model.param_space, prior, method=method, seed=seed,
                            attrs={"likelihood": likelihood}, **options)
