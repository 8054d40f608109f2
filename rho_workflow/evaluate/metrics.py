"""Physics metrics comparing generated fields with held-out reference fields.

Every metric is returned in a plain, JSON-able dict. Arrays are ``(N, *spatial)``: samples
along the first axis, the grid after it. Scale-free forms are chosen so that fields whose mean
is zero (density contrasts) do not divide by zero:

``mean_error``
    ``|mean_gen - mean_ref| / std_ref`` (error of the pooled mean in reference standard
    deviations);
``std_rel_error``
    ``|std_gen / std_ref - 1|`` of the pooled values;
``skewness_error``
    ``|skew_gen - skew_ref|`` (skewness is already dimensionless);
``wasserstein_1``
    the 1D Wasserstein (earth mover's) distance between the pooled values, in field units,
    and ``wasserstein_1_in_std`` the same divided by ``std_ref``;
``variance_ratio``
    ``<var_grid(gen_i)>_i / <var_grid(ref_j)>_j``: per-sample variance over the grid, averaged
    over samples (1 for a generator that reproduces the fluctuation amplitude of single fields);
``spectrum_error``
    with ``box_size``: median over shells of ``|P_gen / P_ref - 1|``
    (:func:`~rho_workflow.evaluate.spectra.spectrum_error`), with both spectra under
    ``"spectrum"``.
``out_of_bounds_generated`` / ``out_of_bounds_reference``
    with ``bounds = (low, high)`` (declared physical bounds, ``None`` for an open side): the
    fraction of valid values outside them.

**Masked fields.** Every metric is computed over the *valid cells*: the cells where every
reference and every generated field is finite (a land mask is NaN in both). The cells
left out are counted (``n_masked_cells``; ``n_generated_nonfinite`` counts generated values
that are not finite where the reference is defined, a sign of a diverging model). Pooled
statistics and the Wasserstein distance pool the valid values; ``variance_ratio`` takes each
field's variance over its valid cells. The power spectrum needs the full periodic grid: on a
masked grid it is not computed, and ``spectrum_note`` says so (a spectrum of a zero-filled
field would mix the mask's own spectrum into the field's).

Noise floors (the scores of a perfect generator) are in :mod:`rho_workflow.evaluate.noise_floor`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

from rho_workflow.evaluate.spectra import power_spectrum, spectrum_error

__all__ = ["compare_fields", "value_statistics"]


def _as_samples(name: str, array: np.ndarray) -> np.ndarray:
    x = np.asarray(array, dtype=np.float64)
    if x.ndim < 2:
        raise ValueError(
            f"{name} has shape {x.shape}: fields must be (N, *spatial) with samples along the "
            "first axis; add a leading axis for a single field (x[None])"
        )
    if x.shape[0] < 1:
        raise ValueError(f"{name} has no samples (shape {x.shape})")
    return x


def value_statistics(values: np.ndarray) -> dict[str, float]:
    """mean, std, skewness g1 = m3 / m2^(3/2) and excess kurtosis of pooled values."""
    v = np.asarray(values, dtype=np.float64).ravel()
    return {
        "mean": float(np.mean(v)),
        "std": float(np.std(v)),
        "skewness": float(stats.skew(v)) if np.std(v) > 0 else 0.0,
        "excess_kurtosis": float(stats.kurtosis(v)) if np.std(v) > 0 else 0.0,
    }


def compare_fields(generated: np.ndarray, reference: np.ndarray,
                   box_size: float | None = None, *, n_bins: int | None = None,
                   bounds: tuple[float | None, float | None] | None = None
                   ) -> dict[str, Any]:
    """Distances between generated and reference fields (definitions in the module docstring).

    Parameters
    ----------
    generated, reference : ndarray, shape (N, *spatial) and (M, *spatial)
        Samples of the same field on the same grid, in the same units.
    box_size : float, optional
        Side of the periodic box of 1D/2D/3D cubic fields: adds ``spectrum_error`` and
        ``spectrum``. Leave out for non-periodic fields (e.g. line profiles).
    n_bins : int, optional
        Shells of the power spectrum (see :func:`~rho_workflow.evaluate.spectra.shell_bins`).

    Returns
    -------
    dict
        JSON-able: floats, ints and lists.
    """
    gen = _as_samples("generated", generated)
    ref = _as_samples("reference", reference)
    if gen.shape[1:] != ref.shape[1:]:
        raise ValueError(
            f"generated fields of shape {gen.shape[1:]} and reference fields of shape "
            f"{ref.shape[1:]} differ: compare fields on the same grid"
        )
    ref_defined = np.isfinite(ref).all(axis=0)
    valid = ref_defined & np.isfinite(gen).all(axis=0)
    if not valid.any():
        raise ValueError("generated and reference fields share no cell where both are finite; "
                         "check the mask and the generated sweep for NaN")
    gen_v, ref_v = gen[:, valid], ref[:, valid]  # (N, n_valid): the valid cells of each field
    sg, sr = value_statistics(gen_v), value_statistics(ref_v)
    std_ref = sr["std"] if sr["std"] > 0 else 1.0
    w1 = float(stats.wasserstein_distance(gen_v.ravel(), ref_v.ravel()))
    var_gen = float(np.mean(np.var(gen_v, axis=1)))
    var_ref = float(np.mean(np.var(ref_v, axis=1)))
    masked = int(valid.size - valid.sum())
    out: dict[str, Any] = {
        "n_generated": int(gen.shape[0]),
        "n_reference": int(ref.shape[0]),
        "n_valid_cells": int(valid.sum()),
        "n_masked_cells": masked,
        "n_generated_nonfinite": int((~np.isfinite(gen[:, ref_defined])).sum()),
        "generated": sg,
        "reference": sr,
        "mean_error": abs(sg["mean"] - sr["mean"]) / std_ref,
        "std_rel_error": abs(sg["std"] / std_ref - 1.0),
        "skewness_error": abs(sg["skewness"] - sr["skewness"]),
        "wasserstein_1": w1,
        "wasserstein_1_in_std": w1 / std_ref,
        "variance_ratio": var_gen / var_ref if var_ref > 0 else float("nan"),
    }
    if bounds is not None:
        low, high = (-np.inf if bounds[0] is None else bounds[0],
                     np.inf if bounds[1] is None else bounds[1])
        for key, v in (("out_of_bounds_generated", gen_v), ("out_of_bounds_reference", ref_v)):
            out[key] = float(np.mean((v < low) | (v > high)))
    if box_size is not None and masked:
        out["spectrum_note"] = (f"not computed: the power spectrum needs the full periodic "
                                f"grid and {masked} cells are masked")
    elif box_size is not None:
        ndim = gen.ndim - 1
        k, p_gen, counts = power_spectrum(gen, box_size, n_bins, ndim=ndim)
        _, p_ref, _ = power_spectrum(ref, box_size, n_bins, ndim=ndim)
        out["spectrum_error"] = spectrum_error(p_gen, p_ref)
        out["spectrum"] = {
            "k": _listed(k), "p_generated": _listed(p_gen), "p_reference": _listed(p_ref),
            "counts": [int(c) for c in counts],
        }
    return out


def _listed(a: np.ndarray) -> list[float | None]:
    """Floats for JSON, with None where a shell is empty (NaN is not valid JSON)."""
    return [float(v) if np.isfinite(v) else None for v in np.asarray(a, dtype=np.float64)]
