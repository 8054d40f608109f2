"""The evaluate stage's physics metrics, their figures and the HTML report.

For each field variable, :func:`write_metrics_and_report` scores the generated members of every
evaluated point against its simulated fields (:func:`rho_workflow.evaluate.point_metrics.point_metrics`,
each score with its noise floor), writes ``metrics_<var>.nc`` and the figures, and one
self-contained ``report.html`` for all variables.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from rho_workflow.data.netcdf import write_netcdf

__all__ = ["write_metrics_and_report"]


def write_metrics_and_report(out_dir: Path, cases: Mapping[str, Sequence[tuple[np.ndarray, np.ndarray]]],
                             points: Sequence[Mapping[str, Any]], seen: Sequence[bool], *,
                             param_units: Mapping[str, str], field_units: Mapping[str, str],
                             box_size: float | None, length_units: str,
                             training_points: Sequence[Mapping[str, Any]], title: str,
                             members_note: str, bins: int, figures: bool,
                             extra_figures: Sequence[str] = (),
                             grid: Mapping[str, Any] | None = None,
                             notes: Sequence[str] = (),
                             variants: Mapping[str, Mapping[str, Sequence[np.ndarray]]] | None = None,
                             variant_descriptions: Mapping[str, str] | None = None,
                             deterministic: bool = False) -> dict[str, Any]:
    """Metrics Datasets (netCDF), their JSON summaries, figures and ``report.html``.

    ``cases[var]`` holds ``(generated, simulated)`` arrays per evaluated point, in the order of
    ``points`` and ``seen`` (whether each point was a training point). ``grid``: ``extent`` and
    ``axis_labels`` of the first two spatial axes, for the slices and projections of 3D fields.
    ``variants[label][var]``: the generated arrays per point of another generator (a reference
    sampler, another encoder), scored against the same simulated fields into the same Dataset
    (:func:`~rho_workflow.evaluate.point_metrics.add_comparison`; ``variant_descriptions``
    says what each is, ``"model"`` included). ``deterministic``: the simulations have no
    randomness (every floor the score of copies of the exact field).
    """
    from rho_workflow.evaluate.point_metrics import (add_comparison, comparison_summary,
                                                     metrics_dataset, metrics_summary, point_metrics)
    from rho_workflow.evaluate.report import comparison_table_html, summary_table_html, write_report
    from rho_workflow.evaluate.report_figures import (plot_comparison, plot_metric_map,
                                                      plot_minkowski, plot_pdfs,
                                                      plot_projections, plot_spectrum_ratios,
                                                      case_label)

    variants = dict(variants or {})
    out: dict[str, Any] = {"metrics": {}, "files": [], "figures": []}
    tables, captioned = {}, []
    for var, full_pairs in cases.items():
        valid = _valid_mask(full_pairs)
        masked = valid is not None
        pairs = _restrict(full_pairs, valid)

        def score(pairs_of_point: Sequence[tuple[np.ndarray, np.ndarray]]) -> list:
            return [point_metrics(g, r, box_size=None if masked else box_size,
                                  field_units=field_units.get(var, "1"),
                                  length_units=length_units, bins=bins,
                                  rng=np.random.default_rng(case), deterministic=deterministic)
                    for case, (g, r) in enumerate(pairs_of_point)]

        ds = metrics_dataset(score(pairs), points, seen, param_units)
        if variants:
            scored = {label: score(_restrict([(g, r) for g, (_, r) in zip(gens[var], full_pairs)], valid))
                      for label, gens in variants.items()}
            ds = add_comparison(ds, scored, variant_descriptions or {})
        ds.attrs["members"] = members_note
        if masked:
            ds.attrs["comment_mask"] = (f"masked field: scores over the {pairs[0][0].shape[1]} cells valid "
                                        "in every field; spectra, Minkowski functionals and the "
                                        "bispectrum need the full periodic grid and are left out")
        path = out_dir / f"metrics_{var}.nc"
        write_netcdf(ds, path, history="physics metrics with noise floors (rho_workflow.evaluate)")
        out["files"].append(str(path))
        summary = metrics_summary(ds)
        comparison = comparison_summary(ds)
        if comparison is not None:
            summary["comparison"] = comparison
        out["metrics"][var] = summary
        tables[f"{var}: score (noise floor) per point"] = summary_table_html(summary)
        if comparison is not None:
            tables[f"{var}: the model against other generators, median over points (noise floor)"] = \
                comparison_table_html(comparison)
        if not figures:
            continue
        label = f"{var}: generated against simulated"
        if comparison is not None:
            captioned.append((plot_comparison(ds, out_dir / f"comparison_{var}.png",
                                              title=f"{var}: the model against other generators"),
                              "Each score over its noise floor per point, for the model and the "
                              "variants it is compared with at the same points (dotted: 1 and 2 "
                              "floors; right of the dashed line: training points)."))
        if "spectrum_ratio" in ds:
            captioned.append((plot_spectrum_ratios(ds, out_dir / f"spectrum_{var}_ratio.png", title=label),
                              "Power-spectrum ratio generated / simulated per point; grey bands: the "
                              "same ratio between two sets of simulations (1 and 2 sigma)."))
        captioned.append((plot_pdfs(ds, out_dir / f"pdf_{var}.png", title=label),
                          "One-point PDFs of the field values, with the 1-Wasserstein distance and its noise floor."))
        if "threshold" in ds.coords:
            captioned.append((plot_minkowski(ds, out_dir / f"minkowski_{var}.png", case=0, title=label),
                              "Minkowski functionals of the excursion sets against threshold at the first point."))
        if not masked and pairs[0][0].ndim == 4 and grid is not None:
            captioned.append((plot_projections(pairs, [case_label(ds, i) for i in range(len(pairs))],
                                               out_dir / f"projections_{var}.png", extent=grid["extent"],
                                               axis_labels=grid["axis_labels"],
                                               units=field_units.get(var), title=label),
                              "3D fields: central slices and projections of one generated and one simulated field per point."))
        metric = "spectrum_error" if "spectrum_error" in ds else "wasserstein_1"
        captioned.append((plot_metric_map(ds, metric, out_dir / f"map_{var}_{metric}.png",
                                          training_points=training_points,
                                          title=f"{var}: {metric} over the parameters"),
                          f"{metric} divided by its noise floor at each evaluated point; crosses: "
                          "the training runs."))
    captioned += [(p, "Generated fields beside simulated ones.") for p in extra_figures
                  if "gallery" in Path(p).name]
    captioned += [(p, "Per-step diffusion diagnostics (entropy bounds, KL terms).") for p in extra_figures
                  if "diagnostics" in Path(p).name]
    out["figures"] = [str(p) for p, _ in captioned if "gallery" not in Path(p).name
                      and "diagnostics" not in Path(p).name]
    methods = "; ".join(dict.fromkeys(s["noise_floor_method"] or "" for s in out["metrics"].values()))
    report = write_report(
        out_dir / "report.html", title=title,
        intro="Fields generated by the model at the evaluated parameter points, against the "
              "simulated fields there. Every score is followed, in brackets, by its noise floor: the "
              "score two independent sets of simulations of the same sizes would get. Green: "
              "within twice the floor; red: above it.",
        tables=tables, figures=captioned,
        notes=[members_note, f"Noise floor: {methods}.", *notes])
    out["report"] = str(report)
    return out


def _valid_mask(pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray | None:
    """None when every value is finite; else the cells valid in all fields of all points (a
    fixed land mask), which the scores are then restricted to."""
    valid = None
    for g, r in pairs:
        ok = np.isfinite(g).all(axis=0) & np.isfinite(r).all(axis=0)
        valid = ok if valid is None else valid & ok
    if valid is None or valid.all():
        return None
    if not valid.any():
        raise ValueError("evaluation: no grid cell is valid (finite) in every field; the metrics "
                         "need a fixed mask shared by the generated and simulated fields")
    return valid


def _restrict(pairs: Sequence[tuple[np.ndarray, np.ndarray]], valid: np.ndarray | None
              ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each field reduced to the ``valid`` cells, as ``(N, n_valid)`` arrays (as is if None)."""
    if valid is None:
        return list(pairs)
    return [(g[:, valid], r[:, valid]) for g, r in pairs]
