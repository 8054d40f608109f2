"""Ensemble scores of generated members against simulated fields: fair CRPS and spread-skill.

The generated members at a parameter point form an ensemble forecast of every grid value; each
held-out simulation is one verifying field. Both scores come from the ``scores`` package
(Bureau of Meteorology):

``crps_fair``
    the fair CRPS (Ferro 2014), ``mean|X - y| - sum_{i != j} |X_i - X_j| / (2 M (M - 1))``,
    unbiased for the ensemble size ``M``; averaged over cells and verifying fields, in field
    units. For fields that are independent draws of the same distribution it is not 0: compare
    it with its noise floor (the same score of true fields against true fields).
``spread_skill_ratio``
    ``sqrt((M + 1) / M) * spread / RMSE(ensemble mean)``, spread the root of the mean ensemble
    variance (ddof 1): 1 for an ensemble drawn from the distribution of the verifying fields
    (Fortin et al. 2014), < 1 under-dispersed, > 1 over-dispersed.
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from scores.continuous import rmse
from scores.probability import crps_for_ensemble

__all__ = ["crps_fair", "spread_skill_ratio"]


def _ensemble_and_obs(members: np.ndarray, observations: np.ndarray) -> tuple[xr.DataArray, xr.DataArray]:
    ens = np.asarray(members, dtype=np.float64)
    obs = np.asarray(observations, dtype=np.float64)
    if ens.ndim < 2 or ens.shape[0] < 2:
        raise ValueError(f"an ensemble needs at least 2 members along the first axis; got {ens.shape}")
    if obs.shape[1:] != ens.shape[1:]:
        raise ValueError(f"observations of shape {obs.shape[1:]} and members of shape "
                         f"{ens.shape[1:]} differ: compare fields on the same grid")
    cells = [f"c{i}" for i in range(ens.ndim - 1)]
    e = xr.DataArray(ens, dims=["member", *cells])
    o = xr.DataArray(obs, dims=["verification", *cells])
    return e, o


def crps_fair(members: np.ndarray, observations: np.ndarray) -> float:
    """Fair CRPS of ``members`` (M, *grid) against each of ``observations`` (K, *grid), mean."""
    e, o = _ensemble_and_obs(members, observations)
    return float(crps_for_ensemble(e, o, ensemble_member_dim="member", method="fair"))


def spread_skill_ratio(members: np.ndarray, observations: np.ndarray) -> float:
    """``sqrt((M+1)/M) spread / RMSE`` of the ensemble mean against each observation."""
    e, o = _ensemble_and_obs(members, observations)
    m = e.sizes["member"]
    spread = float(np.sqrt(e.var("member", ddof=1).mean()))
    skill = float(rmse(e.mean("member"), o))
    return float(np.sqrt((m + 1.0) / m) * spread / skill) if skill > 0 else float("nan")
