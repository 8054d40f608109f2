"""Generated against simulated fields at parameter points: one xarray Dataset, every score with
its noise floor.

:func:`point_metrics` scores one point (``N`` generated, ``M`` simulated fields of one variable)
and returns a Dataset without a ``case`` dimension; :func:`metrics_dataset` stacks the points
along ``case`` with their parameter values, units and whether they were seen in training;
:func:`metrics_summary` reduces it to a JSON-able table. Beside every scalar score ``s`` are
``s_floor`` (the same score of a perfect generator, :mod:`rho_workflow.evaluate.noise_floor`)
and, for deviations, ``s_excess = s / s_floor`` (about 1 or below: within sampling noise).

Scores (field units unless stated):

``mean_error``, ``std_error``
    ``|mean_gen - mean_ref|`` and ``|std_gen - std_ref|`` of the pooled values;
``wasserstein_1``
    1-Wasserstein distance of the pooled values;
``mean_field_rmse``, ``std_field_rmse``
    RMS over the grid of the difference of the per-cell mean and standard-deviation fields;
``variance_ratio``
    ``<var_grid(gen)> / <var_grid(ref)>`` (floor: RMS of ``ratio - 1`` of true sets);
``spectrum_error``
    ``median_k |P_gen / P_ref - 1|`` on periodic cubic grids, with ``spectrum_ratio(k)`` and its
    1-sigma floor ``spectrum_ratio_floor(k)``;
``crps_fair``, ``spread_skill_ratio``
    ensemble scores of :mod:`rho_workflow.evaluate.ensemble` (floors: the median over splits);
``minkowski_*_error``
    2D periodic grids: RMS over thresholds of the difference of each Minkowski functional,
    divided by the RMS of the reference functional (:mod:`rho_workflow.evaluate.minkowski`);
``bispectrum_q``
    reduced bispectrum per triangle (2D/3D periodic), floor the RMS of ``Q_a - Q_b``.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import xarray as xr
from scipy import stats

from rho_workflow.evaluate.bispectrum import DEFAULT_TRIANGLES, reduced_bispectrum
from rho_workflow.evaluate.ensemble import crps_fair, spread_skill_ratio
from rho_workflow.evaluate.minkowski import minkowski_functionals, peak_counts
from rho_workflow.evaluate.noise_floor import NoiseFloor, independent_noise_floor, split_noise_floor
from rho_workflow.evaluate.spectra import power_spectrum

__all__ = ["point_metrics", "metrics_dataset", "metrics_summary", "SCALARS", "COMPARED",
           "add_comparison", "comparison_summary"]

#: Scalar scores in the order of the summary table, with whether they are deviations
#: (ideal 0, floor rescaled to the set sizes, excess = score / floor).
SCALARS: dict[str, bool] = {
    "spectrum_error": True, "wasserstein_1": True, "mean_error": True, "std_error": True,
    "mean_field_rmse": True, "std_field_rmse": True, "variance_ratio": False,
    "crps_fair": False, "spread_skill_ratio": False,
    "minkowski_area_error": True, "minkowski_perimeter_error": True,
    "minkowski_euler_error": True,
}
#: Scores stacked over ``variant`` by :func:`add_comparison` (those every grid has first).
COMPARED = ("spectrum_error", "wasserstein_1", "variance_ratio", "mean_field_rmse",
            "std_field_rmse", "crps_fair", "minkowski_euler_error")
_MINKOWSKI = {"area_fraction": "minkowski_area_error", "perimeter_density": "minkowski_perimeter_error",
              "euler_density": "minkowski_euler_error"}


def _floor(statistic: Callable, ref: np.ndarray, n_gen: int, rng: np.random.Generator,
           n_splits: int, rescale: bool, second: np.ndarray | None) -> NoiseFloor | None:
    if second is not None:
        return independent_noise_floor(statistic, second[:n_gen], ref)
    if ref.shape[0] < 2:
        return None
    return split_noise_floor(statistic, ref, n_gen, rng=rng, n_splits=n_splits, rescale=rescale)


def _rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(a))))


def _scalar_statistics(box_size: float | None, ndim: int, thresholds: np.ndarray | None
                       ) -> dict[str, tuple[Callable, bool]]:
    """name -> (statistic(gen, ref), is_deviation)."""
    grid = lambda x: tuple(range(1, x.ndim))
    out: dict[str, tuple[Callable, bool]] = {
        "wasserstein_1": (lambda g, r: stats.wasserstein_distance(g.ravel(), r.ravel()), True),
        "mean_error": (lambda g, r: abs(g.mean() - r.mean()), True),
        "std_error": (lambda g, r: abs(g.std() - r.std()), True),
        "mean_field_rmse": (lambda g, r: _rms(g.mean(0) - r.mean(0)), True),
        "std_field_rmse": (lambda g, r: _rms(g.std(0) - r.std(0)), True),
        "variance_ratio": (lambda g, r: np.mean(np.var(g, axis=grid(g))) / np.mean(np.var(r, axis=grid(r))), False),
    }
    if box_size is not None:
        def spectrum_error(g, r):
            p_g = power_spectrum(g, box_size, ndim=ndim)[1]
            p_r = power_spectrum(r, box_size, ndim=ndim)[1]
            ok = np.isfinite(p_g) & np.isfinite(p_r) & (p_r > 0)
            return float(np.median(np.abs(p_g[ok] / p_r[ok] - 1.0))) if ok.any() else np.nan
        out["spectrum_error"] = (spectrum_error, True)
    if box_size is not None and ndim == 2 and thresholds is not None:
        for func, name in _MINKOWSKI.items():
            def mf_error(g, r, func=func):
                a = minkowski_functionals(g, thresholds, box_size)[func].mean(0)
                b = minkowski_functionals(r, thresholds, box_size)[func].mean(0)
                scale = _rms(b)
                return _rms(a - b) / scale if scale > 0 else np.nan
            out[name] = (mf_error, True)
    return out


def point_metrics(generated: np.ndarray, reference: np.ndarray, *, box_size: float | None,
                  field_units: str, length_units: str, bins: int = 40,
                  rng: np.random.Generator | None = None, n_splits: int = 16,
                  reference_b: np.ndarray | None = None,
                  triangles: Sequence[tuple[int, int, int]] = DEFAULT_TRIANGLES,
                  deterministic: bool = False) -> xr.Dataset:
    """Scores of ``generated`` (N, *grid) against ``reference`` (M, *grid) with noise floors.

    Parameters
    ----------
    generated, reference : ndarray
        Fields of one variable at one parameter point, in physical units (``field_units``).
    box_size : float or None
        Side of the periodic cubic box in ``length_units``; None for other grids (no spectrum,
        Minkowski functionals or bispectrum then).
    bins : int
        Bins of the one-point PDF (over the range of both sets).
    rng : numpy.random.Generator
        Draws the splits of the noise floor (default seeded with 0: reproducible).
    n_splits : int
        Random splits of ``reference`` for the floor (see
        :func:`~rho_workflow.evaluate.noise_floor.split_noise_floor`).
    reference_b : ndarray, optional
        A second independent true set: the floor is then its score against ``reference``, at
        ``min(N, len(reference_b))`` fields (method ``independent``).
    deterministic : bool
        The simulator has no randomness: every simulated field of the point is the same exact
        field (checked), and a perfect generator returns ``N`` copies of it. Every floor is the
        score of those copies (0 for deviations, 1 for the variance ratio), defined also for a
        single simulated field.
    """
    gen = np.asarray(generated, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    if gen.shape[1:] != ref.shape[1:] or gen.ndim < 2:
        raise ValueError(f"generated {gen.shape} and reference {ref.shape} fields must be "
                         "(N, *grid) on the same grid")
    for name, x in (("generated", gen), ("reference", ref)):
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{name} fields contain NaN or infinite values")
    rng = np.random.default_rng(0) if rng is None else rng
    second = None if reference_b is None else np.asarray(reference_b, dtype=np.float64)
    ndim, n_gen = gen.ndim - 1, gen.shape[0]
    if deterministic:
        spread = float(np.max(np.abs(ref - ref[:1])))
        scale = float(np.max(np.abs(ref))) or 1.0
        if spread > 1e-6 * scale:
            raise ValueError(
                f"the {ref.shape[0]} simulated fields of this point differ by up to {spread:.3g} "
                f"(of values up to {scale:.3g}), so the simulations are not deterministic; declare "
                "evaluation.simulations: stochastic, whose noise floors come from the spread of "
                "the simulated fields")
        second = np.repeat(ref[:1], n_gen, axis=0)
    cubic = box_size is not None and len(set(gen.shape[1:])) == 1
    box = box_size if cubic else None
    k_units = f"rad {length_units}-1"
    fu = "" if field_units in ("", "1") else field_units
    ds = xr.Dataset(attrs={"n_generated": n_gen, "n_reference": int(ref.shape[0])})
    thresholds = np.quantile(ref, np.linspace(0.02, 0.98, 13)) if box is not None and ndim == 2 else None
    method = "none: a single true field, no floor"
    for name, (stat, deviation) in _scalar_statistics(box, ndim, thresholds).items():
        value = float(stat(gen, ref))
        floor = _floor(stat, ref, n_gen, rng, n_splits, deviation, second)
        if deviation:
            f = float(floor.rms) if floor is not None else math.nan
        elif name == "variance_ratio":
            f = float(np.sqrt(np.nanmean((floor.draws - 1.0) ** 2))) if floor is not None else math.nan
        else:
            f = float(floor.median) if floor is not None else math.nan
        method = floor.method if floor is not None else method
        units = fu if name in ("wasserstein_1", "mean_error", "std_error", "mean_field_rmse",
                               "std_field_rmse") else "1"
        ds[name] = ((), value, {"units": units or "1"})
        ds[f"{name}_floor"] = ((), f, {"units": units or "1", "long_name": f"noise floor of {name}"})
        if deviation or name == "variance_ratio":
            dev = abs(value - 1.0) if name == "variance_ratio" else value
            ds[f"{name}_excess"] = ((), dev / f if f > 0 else (math.inf if dev > 0 else 0.0),
                                    {"units": "1", "long_name": f"{name} in units of its noise floor"})
    for name in ("crps_fair", "spread_skill_ratio"):
        if n_gen >= 2:
            stat = crps_fair if name == "crps_fair" else spread_skill_ratio
            value = stat(gen, ref)
            floor = _floor(lambda a, b: stat(a, b) if a.shape[0] >= 2 else np.nan,
                           ref, n_gen, rng, n_splits, False, second)
            ds[name] = ((), value, {"units": (fu or "1") if name == "crps_fair" else "1"})
            ds[f"{name}_floor"] = ((), float(floor.median) if floor is not None else math.nan,
                                   {"units": ds[name].attrs["units"],
                                    "long_name": f"{name} of true fields against true fields"})
    if deterministic:
        method = ("deterministic simulations: every floor is the score of a perfect generator, "
                  f"{n_gen} copies of the exact simulated field (0 for deviations)")
    ds.attrs["noise_floor_method"] = method
    # the one-point PDF
    edges = np.linspace(min(gen.min(), ref.min()), max(gen.max(), ref.max()) + 1e-12, bins + 1)
    centres = 0.5 * (edges[1:] + edges[:-1])
    density_units = "1" if not fu else f"{fu}-1"
    ds = ds.assign_coords(value=("value", centres, {"units": fu or "1", "long_name": "field value (bin centre)"}))
    ds["pdf_generated"] = ("value", np.histogram(gen, edges, density=True)[0], {"units": density_units})
    ds["pdf_reference"] = ("value", np.histogram(ref, edges, density=True)[0], {"units": density_units})
    if box is not None:
        k, p_gen, _ = power_spectrum(gen, box, ndim=ndim)
        _, p_ref, _ = power_spectrum(ref, box, ndim=ndim)
        p_units = f"({fu})2 {length_units}{ndim}" if fu else f"{length_units}{ndim}"
        ds = ds.assign_coords(k=("k", k, {"units": k_units, "long_name": "wavenumber"}))
        ds["spectrum_generated"] = ("k", p_gen, {"units": p_units})
        ds["spectrum_reference"] = ("k", p_ref, {"units": p_units})
        with np.errstate(invalid="ignore", divide="ignore"):
            ds["spectrum_ratio"] = ("k", p_gen / p_ref, {"units": "1", "long_name": "P_generated / P_reference"})
        def ratio(a, b):
            with np.errstate(invalid="ignore", divide="ignore"):  # P = 0 at some k: undefined there
                return power_spectrum(a, box, ndim=ndim)[1] / power_spectrum(b, box, ndim=ndim)[1] - 1.0
        floor = _floor(ratio, ref, n_gen, rng, n_splits, True, second)
        ds["spectrum_ratio_floor"] = ("k", floor.rms if floor is not None else np.full(k.shape, np.nan),
                                      {"units": "1", "long_name": "1-sigma noise floor of P_gen / P_ref - 1"})
        if ndim >= 2:
            _bispectrum(ds, gen, ref, box, ndim, triangles, rng, n_splits, second, n_gen)
    if thresholds is not None:
        _minkowski(ds, gen, ref, box, thresholds, fu, length_units)
    return ds


def _bispectrum(ds: xr.Dataset, gen, ref, box, ndim, triangles, rng, n_splits, second, n_gen) -> None:
    n = gen.shape[-1]
    usable = [t for t in triangles if max(t) <= n // 2 and sum(t) - 2 * max(t) >= 0]
    if not usable:
        return
    q = lambda x: reduced_bispectrum(x, box, ndim, usable)["reduced_bispectrum"]
    floor = _floor(lambda a, b: q(a) - q(b), ref, n_gen, rng, n_splits, True, second)
    ds.coords["triangle"] = ("triangle", [f"{a}-{b}-{c} k_f" for a, b, c in usable],
                             {"long_name": "triangle sides in units of the fundamental 2 pi / L"})
    ds["bispectrum_q_generated"] = ("triangle", q(gen), {"units": "1", "long_name": "reduced bispectrum Q"})
    ds["bispectrum_q_reference"] = ("triangle", q(ref), {"units": "1", "long_name": "reduced bispectrum Q"})
    ds["bispectrum_q_floor"] = ("triangle", floor.rms if floor is not None else np.full(len(usable), np.nan),
                                {"units": "1", "long_name": "1-sigma noise floor of Q_gen - Q_ref"})


def _minkowski(ds: xr.Dataset, gen, ref, box, thresholds, fu, length_units) -> None:
    ds.coords["threshold"] = ("threshold", thresholds,
                              {"units": fu or "1", "long_name": "excursion-set threshold (2-98% quantiles of the reference values)"})
    units = {"area_fraction": "1", "perimeter_density": f"{length_units}-1",
             "euler_density": f"{length_units}-2"}
    for label, fields in (("generated", gen), ("reference", ref)):
        mf = minkowski_functionals(fields, thresholds, box)
        for func, values in mf.items():
            ds[f"{func}_{label}"] = ("threshold", values.mean(0), {"units": units[func]})
            ds[f"{func}_{label}_std"] = ("threshold", values.std(0),
                                         {"units": units[func], "long_name": "standard deviation over fields"})
    edges = np.concatenate([thresholds, [max(gen.max(), ref.max()) + 1e-12]])
    ds["peaks_generated"] = ("threshold", peak_counts(gen, edges, box).mean(0),
                             {"units": f"{length_units}-2", "long_name": "peaks per area, height from threshold to the next"})
    ds["peaks_reference"] = ("threshold", peak_counts(ref, edges, box).mean(0),
                             {"units": f"{length_units}-2", "long_name": "peaks per area, height from threshold to the next"})


def metrics_dataset(per_point: Sequence[xr.Dataset], points: Sequence[Mapping[str, Any]],
                    seen_in_training: Sequence[bool], param_units: Mapping[str, str]) -> xr.Dataset:
    """Stack :func:`point_metrics` results along ``case`` with parameter coordinates.

    Coordinates that depend on the point (``value``, ``threshold``) become 2D ``(case, ...)``.
    """
    if not per_point:
        raise ValueError("metrics_dataset: no points to stack")
    renamed = []
    for ds in per_point:
        moving = [c for c in ("value", "threshold") if c in ds.coords]
        ds = ds.rename({c: f"{c}_index" for c in moving})
        for c in moving:
            ds = ds.assign_coords({c: (f"{c}_index", ds[f"{c}_index"].values,
                                       dict(ds[f"{c}_index"].attrs))}).drop_vars(f"{c}_index")
        renamed.append(ds)
    out = xr.concat(renamed, dim="case", coords="different", compat="equals", join="outer",
                    combine_attrs="drop_conflicts")
    out = out.assign_coords(case=np.arange(len(per_point)))
    for name in points[0]:
        out.coords[name] = ("case", np.asarray([p[name] for p in points]),
                            {"units": param_units.get(name, "1")})
    out.coords["seen_in_training"] = ("case", np.asarray(seen_in_training, dtype=np.int8),
                                      {"long_name": "1: the point was a training point", "flag_values": "0 1"})
    out["n_generated"] = ("case", [d.attrs["n_generated"] for d in per_point], {"units": "1"})
    out["n_reference"] = ("case", [d.attrs["n_reference"] for d in per_point], {"units": "1"})
    out.attrs = {"Conventions": "CF-1.8",
                 "noise_floor_method": "; ".join(dict.fromkeys(d.attrs["noise_floor_method"] for d in per_point)),
                 "comment": "every score X has X_floor, the score of a perfect generator with the "
                            "same numbers of fields (rho_workflow.evaluate.noise_floor)"}
    return out


def _json(v: Any) -> Any:
    v = float(v)
    return v if math.isfinite(v) else None


def metrics_summary(ds: xr.Dataset) -> dict[str, Any]:
    """JSON-able table: per case its point, sizes, and each scalar score with floor and excess;
    the median over cases of each score and excess."""
    params = [c for c in ds.coords if ds[c].dims == ("case",) and c not in ("case", "seen_in_training")]
    rows = []
    for i in range(ds.sizes["case"]):
        c = ds.isel(case=i)
        row: dict[str, Any] = {"case": i, "point": {p: c[p].item() for p in params},
                               "seen_in_training": bool(c["seen_in_training"].item()),
                               "n_generated": int(c["n_generated"]), "n_reference": int(c["n_reference"])}
        for name in SCALARS:
            if name in ds:
                row[name] = {"value": _json(c[name]), "floor": _json(c[f"{name}_floor"]),
                             "units": ds[name].attrs.get("units", "1")}
                if f"{name}_excess" in ds:
                    row[name]["excess"] = _json(c[f"{name}_excess"])
        rows.append(row)
    with warnings.catch_warnings():  # a score undefined at every point stays None
        warnings.simplefilter("ignore", RuntimeWarning)
        medians = {name: {"value": _json(np.nanmedian(ds[name].values)),
                          "floor": _json(np.nanmedian(ds[f"{name}_floor"].values))}
                   for name in SCALARS if name in ds}
    return {"noise_floor_method": ds.attrs.get("noise_floor_method"), "cases": rows,
            "median": medians}


def add_comparison(ds: xr.Dataset, variants: Mapping[str, Sequence[xr.Dataset]],
                   descriptions: Mapping[str, str]) -> xr.Dataset:
    """``ds`` (the model's metrics over ``case``) with ``compare_<score>(variant, case)``: the
    same score of other generators at the same points against the same simulated fields.

    ``variants[label]`` holds the :func:`point_metrics` of one variant per case (same members
    per point, so the model's ``<score>_floor`` is theirs too); the first variant is
    ``model`` itself. ``descriptions[label]`` says what each variant is (``model`` included).
    """
    labels = ["model", *variants]
    for label, per in variants.items():
        if len(per) != ds.sizes["case"]:
            raise ValueError(f"comparison variant {label!r} has {len(per)} points, the model "
                             f"{ds.sizes['case']}; score every variant at the same points")
    out = ds.assign_coords(variant=("variant", np.asarray(labels, dtype=object),
                                    {"long_name": "generator scored at the same points"}))
    out["variant_description"] = ("variant", np.asarray([descriptions.get(k, k) for k in labels],
                                                        dtype=object), {"long_name": "what each variant is"})
    for name in COMPARED:
        if name not in ds:
            continue
        rows = [ds[name].values] + [np.asarray([float(p[name]) if name in p else math.nan for p in per])
                                    for per in variants.values()]
        out[f"compare_{name}"] = (("variant", "case"), np.stack(rows),
                                  {"units": ds[name].attrs.get("units", "1"),
                                   "long_name": f"{name} of each variant (its noise floor: {name}_floor)"})
    return out


def comparison_summary(ds: xr.Dataset) -> dict[str, Any] | None:
    """Per compared score and variant, the median over held-out and over training points,
    beside the median floor of each; None without a ``variant`` dimension."""
    if "variant" not in ds.dims:
        return None
    seen = ds["seen_in_training"].values.astype(bool)
    groups = {"held_out": ~seen, "training": seen}
    out: dict[str, Any] = {"variants": {str(v): str(d) for v, d in zip(
        ds["variant"].values, ds["variant_description"].values)}, "scores": {}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for name in COMPARED:
            if f"compare_{name}" not in ds:
                continue
            values = ds[f"compare_{name}"].values
            floor = ds[f"{name}_floor"].values
            entry: dict[str, Any] = {"units": ds[name].attrs.get("units", "1"), "floor": {}}
            for g, mask in groups.items():
                entry["floor"][g] = _json(np.nanmedian(floor[mask])) if mask.any() else None
            for v, row in zip(ds["variant"].values, values):
                entry[str(v)] = {g: (_json(np.nanmedian(row[mask])) if mask.any() else None)
                                 for g, mask in groups.items()}
            out["scores"][name] = entry
    return out

