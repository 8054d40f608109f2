"""The evaluate stage: generated fields against held-out simulated runs at the same points.

The held-out split of the training store holds runs whose parameter points the model never
saw. :func:`evaluation_plan` takes up to ``max_points`` of those points as a table sweep with
as many members as there are reference fields per point; :func:`evaluate_sweep` compares each
point's generated fields with its simulated ones (value statistics, Wasserstein distance,
power spectrum on periodic cubic grids; :mod:`rho_workflow.evaluate`), and writes a JSON
summary and PNG figures whose axes carry physical units.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import xarray as xr

from rho_workflow.params import ParamSpace
from rho_workflow.atomic import atomic_write_json
from rho_workflow.data.netcdf import write_netcdf
from rho_workflow.workflow.report import write_metrics_and_report
from rho_workflow.workflow.sweep import SweepPlan, SweepRequest, plan_sweep

__all__ = ["reference_points", "evaluation_members", "evaluation_plan", "evaluate_sweep",
           "box_size_of"]


def reference_points(store: Any, split: str, max_points: int) -> list[tuple[dict, np.ndarray]]:
    """Up to ``max_points`` distinct parameter points of ``split`` with their sample indices
    (points in the store's order, spread evenly over the split)."""
    idx = store.split_indices(split)
    if len(idx) == 0:
        raise ValueError(f"evaluation.split: the training store has no {split!r} samples; "
                         "raise data.split.held_out or choose another split")
    points = store.points(indices=idx)
    groups: dict[tuple, list[int]] = {}
    firsts: dict[tuple, dict] = {}
    for i, p in zip(idx, points):
        key = tuple(p[n] for n in store.param_space.names)
        groups.setdefault(key, []).append(int(i))
        firsts.setdefault(key, p)
    keys = list(groups)
    chosen = [keys[int(round(j))] for j in np.linspace(0, len(keys) - 1, min(max_points, len(keys)))]
    return [(firsts[k], np.asarray(groups[k])) for k in dict.fromkeys(chosen)]


def evaluation_members(refs: list[tuple[dict, np.ndarray]], members: int | None) -> tuple[int, str]:
    """Generated members per evaluated point and the sentence that says why.

    Default: :func:`~rho_workflow.evaluate.noise_floor.resolving_members` of the largest
    number of simulated fields per point, so that the noise floor is within 10% of its limit.
    """
    from rho_workflow.evaluate.noise_floor import resolving_members

    n_ref = max(len(ix) for _, ix in refs)
    if members is not None:
        return int(members), (f"{members} generated members per point (evaluation.members), "
                              f"against up to {n_ref} simulated fields per point.")
    n = max(2, resolving_members(n_ref))
    return n, (f"{n} generated members per point: with {n_ref} simulated fields per point, the "
               f"noise floor sqrt(1/N_gen + 1/N_sim) is then within 10% of its limit sqrt(1/N_sim); "
               "more members would not sharpen the comparison (set evaluation.members to change).")


def evaluation_plan(refs: list[tuple[dict, np.ndarray]], sampling: Any,
                    param_space: ParamSpace, members: int | None = None, *,
                    sampler: str | None = None, steps: int | None = None) -> SweepPlan:
    """A table sweep at the reference points, ``members`` per point (default: one per
    reference field), with the pipeline's sampler or ``sampler``/``steps``."""
    members = members or max(len(ix) for _, ix in refs)
    section = SweepRequest(
        grid=None, table=[dict(p) for p, _ in refs], table_units={}, members=members,
        seed=sampling.seed, sampler=sampler or sampling.sampler, steps=steps or sampling.steps,
        spacing=None if sampler else getattr(sampling, "spacing", None),
        guidance=sampling.guidance, allow_extrapolation=True, batch_size=sampling.batch_size,
        chunk_size=sampling.chunk_size)
    return plan_sweep(section, param_space, path="evaluation")


def box_size_of(coords: Mapping[str, Any], dims: list[str]) -> tuple[float | None, str]:
    """Side of a periodic cubic box of cell-centred coordinates, and its units; None when
    the grid is not cubic and uniformly spaced (no power spectrum then)."""
    sizes, units = [], set()
    for d in dims:
        values = np.asarray(coords[d]["values"], dtype=np.float64)
        units.add(coords[d].get("units", "1"))
        steps = np.diff(values)
        if len(values) < 4 or not np.allclose(steps, steps[0], rtol=1e-6):
            return None, ""
        sizes.append(len(values) * float(steps[0]))
    if len(units) != 1 or not np.allclose(sizes, sizes[0], rtol=1e-6):
        return None, ""
    return float(sizes[0]), units.pop()


def held_out_log_likelihood(client: Any, checkpoint: str | Path, store_path: str | Path,
                            refs: list[tuple[dict, np.ndarray]], *, checkpoint_sha256: str,
                            method: str = "ode", max_fields: int = 2, threads: int | None = 1,
                            gpu: bool = False) -> dict[str, Any]:
    """``log p(x | point)`` in bits per dimension of up to ``max_fields`` reference fields
    per point, computed in one task on ``client`` (a ``GPU`` worker when ``gpu``)."""
    from rho_workflow.data.store import open_store
    from rho_workflow.workflow.tasks import log_likelihood_task

    cases, fields, points = [], [], []
    with open_store(store_path) as store:
        for case, (point, indices) in enumerate(refs):
            chosen = np.asarray(indices)[:max_fields]
            fields.append(store.fields()[chosen].compute(scheduler="threads"))
            points += [dict(point)] * len(chosen)
            cases += [case] * len(chosen)
    future = client.submit(log_likelihood_task, np.concatenate(fields), points,
                           checkpoint=str(checkpoint), checkpoint_sha256=checkpoint_sha256,
                           method=method, unit="bits_per_dim", threads=threads,
                           device="auto" if gpu else "cpu",
                           resources={"GPU": 1} if gpu else None, pure=False)
    return {**future.result(), "case": cases}


def likelihood_dataset(result: Mapping[str, Any], refs: list[tuple[dict, np.ndarray]]) -> xr.Dataset:
    """The held-out log-likelihoods as a Dataset over ``field`` with each field's ``case``
    and parameter values as coordinates."""
    case = np.asarray(result["case"], dtype=np.int64)
    coords: dict[str, Any] = {"case": ("field", case)}
    for name in refs[0][0]:
        values = [refs[c][0][name] for c in case]
        coords[name] = ("field", np.asarray(values))
    attrs = {"units": "bit", "long_name": f"log2-likelihood per dimension ({result['method']})",
             "comment": "log p(x | parameters) of held-out simulated fields in the data units, "
                        "divided by the number of values per field and by ln 2"}
    ds = xr.Dataset({"log_likelihood": ("field", np.asarray(result["values"]), attrs)}, coords=coords)
    if result.get("stderr") is not None:
        ds["log_likelihood_stderr"] = ("field", np.asarray(result["stderr"]),
                                       {"units": "bit", "long_name": "Monte-Carlo standard error"})
    ds.attrs = {"Conventions": "CF-1.8", "rho_method": result["method"],
                "rho_nfe_per_field": int(result["nfe_per_sample"]), "rho_wall_s": float(result["wall_s"])}
    return ds


def _add_likelihoods(summary: dict[str, Any], result: Mapping[str, Any] | None) -> None:
    if result is None:
        return
    values, case = np.asarray(result["values"]), np.asarray(result["case"])
    for entry in summary["points"]:
        mine = values[case == entry["case"]]
        entry["log_likelihood_bits_per_dim"] = float(mine.mean()) if len(mine) else None
    summary["log_likelihood"] = {k: result[k] for k in ("method", "unit", "nfe_per_sample", "wall_s")}
    summary["log_likelihood"]["median_bits_per_dim"] = float(np.median(values))


def _diagnostics(out_dir: Path, result: Mapping[str, Any], figures: bool) -> list[str]:
    """``diagnostics.nc`` (and its plot): the per-step entropies of the model's schedule and,
    for the bound, the mean per-step KL terms of the held-out fields."""
    from rho_workflow.diffusion.likelihood import gaussian_entropy_diagnostics
    from rho_workflow.diffusion.schedules import make_schedule
    from rho_workflow.evaluate.diagnostics import diagnostics_dataset, plot_diagnostics

    schedule = make_schedule(result["schedule"], T=int(result["T"]))
    ds = diagnostics_dataset(gaussian_entropy_diagnostics(schedule), result.get("kl_steps"),
                             result.get("kl_per_dim"))
    write_netcdf(ds, out_dir / "diagnostics.nc", history="per-step diffusion diagnostics")
    if not figures:
        return []
    return [str(plot_diagnostics(ds, out_dir / "diagnostics.png",
                                 title=f"{result['schedule']} schedule, T = {result['T']}"))]


def evaluate_sweep(samples_path: str | Path, store_path: str | Path,
                   refs: list[tuple[dict, np.ndarray]], out_dir: str | Path, *,
                   bins: int = 50, figures: bool = True,
                   log_likelihood: Mapping[str, Any] | None = None,
                   split: str = "held_out", title: str = "Evaluation",
                   members_note: str = "", splits: list[str] | None = None,
                   variants: Mapping[str, str | Path] | None = None,
                   variant_descriptions: Mapping[str, str] | None = None,
                   deterministic: bool = False) -> dict[str, Any]:
    """Compare generated (``samples_path``, a table sweep at ``refs``) with reference fields
    of ``split``; write ``summary.json``, ``metrics_<var>.nc``, figures and ``report.html``
    under ``out_dir``; return the summary.

    A point is ``seen_in_training`` when a training sample shares its parameters (always so
    for ``split="train"``; possible for held-out runs of a file split). Metrics are over the
    valid cells of masked fields (:mod:`rho_workflow.evaluate.metrics`), with the fraction of
    values outside the declared ``data.bounds``. ``splits[i]``: the split point ``i`` was
    taken from, where they differ (training points evaluated beside held-out ones).

    ``variants``: label -> another table sweep at the same points (same members), e.g. the
    model sampled by 1000-step DDPM or a twin trained with the hash encoder, scored into the
    same metrics files (``compare_<score>`` over ``variant``); ``deterministic``: the
    simulations have no randomness (``evaluation.simulations``)."""
    from rho_workflow.data.store import open_store
    from rho_workflow.evaluate.metrics import compare_fields
    from rho_workflow.workflow.output import udunits

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"samples": str(samples_path), "store": str(store_path),
                               "split": split, "points": [], "figures": []}
    with open_store(store_path) as store, xr.open_dataset(samples_path,
                                                          decode_times=False) as gen_ds:
        meta = store.metadata()
        names = store.param_space.names
        trained = {tuple(p[n] for n in names) for p in store.points("train")}
        bounds = store.bounds()
        dims = list(meta["spatial_dims"])
        box, length_units = box_size_of(meta["coords"], dims)
        summary["box_size"] = box
        summary["box_units"] = length_units
        pooled: dict[str, tuple[list, list]] = {v: ([], []) for v in store.variables}
        seen_list: list[bool] = []
        for case, (point, indices) in enumerate(refs):
            physical = store.fields()[indices].compute(scheduler="threads")
            seen = tuple(point[n] for n in names) in trained
            entry: dict[str, Any] = {"case": case, "point": point,
                                     "split": splits[case] if splits else split,
                                     "seen_in_training": seen,
                                     "n_reference": int(len(indices)), "metrics": {}}
            for c, var in enumerate(store.variables):
                gen = np.asarray(gen_ds[var].isel(case=case).values, dtype=np.float64)
                ref = np.asarray(physical[:, c], dtype=np.float64)
                metrics = compare_fields(gen, ref, box, n_bins=None, bounds=bounds.get(var))
                entry["metrics"][var] = metrics
                pooled[var][0].append(gen)
                pooled[var][1].append(ref)
            summary["points"].append(entry)
            seen_list.append(seen)
        summary["pooled"] = {}
        for var, (gens, ref_list) in pooled.items():
            summary["pooled"][var] = compare_fields(np.concatenate(gens), np.concatenate(ref_list),
                                                    None, bounds=bounds.get(var))
            if figures:
                summary["figures"].append(_gallery(out_dir, var, gens, ref_list, refs, meta,
                                                   store.field_attrs.get(var, {}).get("units"),
                                                   [("training-run" if p["seen_in_training"] else
                                                     p["split"].replace("_", "-"))
                                                    for p in summary["points"]]))
        training = store.points("train")
        field_units = {v: store.field_attrs.get(v, {}).get("units", "1") for v in store.variables}
        param_units = {p.name: p.units for p in store.param_space.params}
    summary["headline"] = _headline(summary)
    variant_fields = {label: _read_variant(path, list(pooled), len(refs))
                      for label, path in (variants or {}).items()}
    _add_likelihoods(summary, log_likelihood)
    if log_likelihood is not None:
        write_netcdf(likelihood_dataset(log_likelihood, refs), out_dir / "log_likelihood.nc",
                     history="held-out log-likelihood")
        summary["figures"] += _diagnostics(out_dir, log_likelihood, figures)
    report = write_metrics_and_report(
        out_dir, {v: list(zip(*pooled[v])) for v in pooled}, [p for p, _ in refs], seen_list,
        param_units=param_units, field_units=field_units, box_size=box,
        length_units=udunits(length_units) if length_units else "1", training_points=training,
        title=title, members_note=members_note, bins=bins, figures=figures,
        extra_figures=summary["figures"], grid=_grid_labels(meta),
        notes=_likelihood_notes(summary), variants=variant_fields,
        variant_descriptions=variant_descriptions, deterministic=deterministic)
    summary["metrics"] = report["metrics"]
    summary["over_floor"] = _over_floor(report["metrics"], split)
    summary["metrics_files"] = report["files"]
    summary["figures"] = report["figures"] + summary["figures"]
    summary["report"] = report["report"]
    summary["members"] = members_note
    atomic_write_json(out_dir / "summary.json", summary)
    return summary


def _read_variant(path: str | Path, variables: list[str], n_cases: int) -> dict[str, list[np.ndarray]]:
    """The generated fields of a comparison sweep: per variable, one array per case."""
    with xr.open_dataset(path, decode_times=False) as ds:
        if ds.sizes.get("case") != n_cases:
            raise ValueError(f"comparison sweep {path} has {ds.sizes.get('case')} points, the "
                             f"evaluation {n_cases}; rerun the evaluate stage with --overwrite")
        return {var: [np.asarray(ds[var].isel(case=c).values, dtype=np.float64)
                      for c in range(n_cases)] for var in variables}


def _gallery(out_dir: Path, var: str, gens: list, ref_list: list, refs: list, meta: Mapping[str, Any],
             units: str | None, labels: list[str]) -> str:
    """Generated beside simulated fields at the first four points (``labels[i]``: where the
    simulation of point ``i`` came from), axes in grid units."""
    from rho_workflow.evaluate.plots import plot_field_gallery
    from rho_workflow.workflow.output import udunits

    panels, titles = [], []
    for gen, ref, (point, _), label in list(zip(gens, ref_list, refs, labels))[:4]:
        panels += [gen[0], ref[0]]
        titles += [f"generated, {_point_title(point)}", f"{label} simulation"]
    dims, coords = list(meta["spatial_dims"]), meta["coords"]
    labels = [f"{d} [{udunits(coords[d].get('units', '1'))}]" for d in dims]
    extent = None
    if len(dims) == 2:
        xs, ys = (np.asarray(coords[d]["values"]) for d in dims)
        extent = (float(xs.min()), float(xs.max()), float(ys.min()), float(ys.max()))
    return str(plot_field_gallery(panels, titles, out_dir / f"gallery_{var}.png", extent=extent,
                                  axis_labels=labels, units=units))


def _likelihood_notes(summary: Mapping[str, Any]) -> list[str]:
    """The held-out log-likelihood per point, as sentences for the report."""
    ll = summary.get("log_likelihood")
    if not ll:
        return []
    per_point = "; ".join(f"{_point_title(p['point'])}"
                          f"{' (training point)' if p['seen_in_training'] else ''}: "
                          f"{p['log_likelihood_bits_per_dim']:.4g}"
                          for p in summary["points"] if p.get("log_likelihood_bits_per_dim") is not None)
    return [f"Log-likelihood log2 p(x | parameters) per dimension of simulated fields "
            f"({ll['method']}, {ll['nfe_per_sample']} network calls per field), median "
            f"{ll['median_bits_per_dim']:.4g} bit; a training point far above the held-out ones "
            f"means overfitting: {per_point}."]


def _grid_labels(meta: Mapping[str, Any]) -> dict[str, Any] | None:
    """Extent and axis labels (with units) of the first two spatial axes, or None in 1D."""
    from rho_workflow.workflow.output import udunits

    dims, coords = list(meta["spatial_dims"]), meta["coords"]
    if len(dims) < 2:
        return None
    xs, ys = (np.asarray(coords[d]["values"], dtype=float) for d in dims[:2])
    return {"extent": (float(xs.min()), float(xs.max()), float(ys.min()), float(ys.max())),
            "axis_labels": tuple(f"{d} [{udunits(coords[d].get('units', '1'))}]" for d in dims[:2])}


def _point_title(point: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in point.items())


#: The scores the run's summary sets beside their noise floor (see :func:`_over_floor`)
FLOOR_HEADLINE = ("spectrum_error", "wasserstein_1")


def _over_floor(metrics: Mapping[str, Any], split: str) -> dict[str, Any]:
    """Per variable and score of :data:`FLOOR_HEADLINE`: the median over the evaluated
    split's points (training points beside them left out, unless the split is ``train``) of
    the score, of its noise floor (the same score of as many simulated fields as generated,
    against the rest) and their ratio: how far the model is from indistinguishable."""
    out: dict[str, Any] = {}
    for var, table in metrics.items():
        rows = [r for r in table["cases"] if split == "train" or not r["seen_in_training"]]
        for name in FLOOR_HEADLINE:
            pairs = [(r[name]["value"], r[name]["floor"]) for r in rows if name in r
                     and r[name]["value"] is not None and r[name]["floor"] is not None]
            if pairs:
                value, floor = (float(np.median(v)) for v in zip(*pairs))
                out.setdefault(var, {})[name] = {"value": value, "floor": floor,
                                                 "ratio": value / floor if floor > 0 else None,
                                                 "points": len(pairs), "split": split}
    return out


def _headline(summary: Mapping[str, Any]) -> dict[str, Any]:
    """Medians over points of the main scores, per field variable."""
    out = {}
    for var in summary["pooled"]:
        rows = [p["metrics"][var] for p in summary["points"]]
        out[var] = {key: float(np.median([r[key] for r in rows if key in r and r[key] is not None
                                          and math.isfinite(r[key])] or [np.nan]))
                    for key in ("mean_error", "std_rel_error", "wasserstein_1_in_std",
                                "variance_ratio", "spectrum_error", "out_of_bounds_generated")}
    return out
