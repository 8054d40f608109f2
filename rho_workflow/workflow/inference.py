"""The infer stage: which physical parameters produced an observed field, under a pipeline's model.

``rho-workflow infer PIPELINE.yaml --observed FILE.nc`` reads the field(s) of ``FILE.nc``
(the model's field variable on its grid, units converted), computes the posterior of the
parameters with :func:`rho_workflow.training.inference.infer_field`, and writes, beside the
other outputs under ``<output.dir>/inference/``, one netCDF posterior per field
(``posterior_<file>[_<i>].nc``: parameter coordinates with units, log posterior, draws,
summary) and its corner plot. It runs in the driver process (one field is seconds to minutes
on a CPU): no cluster is started.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from rho_workflow.atomic import atomic_path, file_sha256
from rho_workflow.provenance import history_line, versions

__all__ = ["infer_observed"]


def infer_observed(config: Any, observed: str | Path, *, method: str = "grid", likelihood: str = "bound",
                   prior: Mapping[str, Any] | None = None, variable: str | None = None, figures: bool = True,
                   options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Posterior of each field in ``observed`` under the pipeline's trained model; returns a summary."""
    from rho_workflow.data.observations import read_fields
    from rho_workflow.training.model import TrainedModel
    from rho_workflow.training.observe import model_labels
    from rho_workflow.workflow.stages import require

    o = config.output
    require(o.checkpoint_path, "checkpoint", "train")
    sha = file_sha256(o.checkpoint_path)
    model = TrainedModel.load(o.checkpoint_path, device="cpu")
    fields = read_fields(observed, model_labels(model), variable=variable, where=f"--observed {observed}")
    out_dir = o.root / "inference"
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(observed).stem
    written, summaries = [], []
    for i, field in enumerate(fields):
        post = model.infer(field, prior, method=method, likelihood=likelihood, seed=i, **dict(options or {}))
        post.attrs.update({
            "Conventions": "CF-1.8", "source": "rho_workflow parameter inference",
            "history": history_line(f"rho-workflow infer {config.source or config.name} --observed {observed}"),
            "observed_file": str(observed), "observed_field_index": i,
            "observed_file_sha256": file_sha256(observed), "checkpoint_sha256": sha,
            "versions": json.dumps(versions())})
        name = f"posterior_{stem}" + (f"_{i}" if len(fields) > 1 else "")
        path = out_dir / f"{name}.nc"
        with atomic_path(path, suffix=".nc") as tmp:
            post.to_netcdf(tmp)
        written.append(str(path))
        summary = json.loads(post.attrs["summary"])
        summaries.append(summary)
        if figures and any("mean" in s for s in summary.values()):
            from rho_workflow.evaluate.posterior_plots import plot_corner

            written.append(str(plot_corner(post, out_dir / f"{name}.png")))
    return {"fields": len(fields), "outputs": written, "summaries": summaries, "method": method,
            "likelihood": likelihood}
