"""A small pipeline end to end on a local Dask cluster: simulate, preprocess, train, sample,
evaluate; labeled CF output; resume; the CLI (dry run, stage commands, errors)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml
from cf_check import cf_high_priority

from rho_workflow.cli import main
from rho_workflow.pipeline import Pipeline, PipelineError, run_pipeline
from rho_workflow.training.checkpoint import load_checkpoint


def small_pipeline(root: Path) -> dict:
    return {
        "name": "e2e",
        "simulate": {"kind": "lognormal-field", "out_dir": str(root / "sims"), "runs": 12,
                     "realizations": 2, "size": 16, "seed": 0},
        "data": {"files": str(root / "sims" / "*.nc"), "variables": ["density"],
                 "spatial_dims": ["x", "y"], "sample_dims": ["realization"], "units": {"density": "1"},
                 "params": {"index": {"source": "variable_attribute", "units": "1"},
                            "amplitude": {"source": "variable_attribute", "units": "Mparsec2"}},
                 "transform": {"log": True}, "split": {"validation": 0.1, "held_out": 0.2, "seed": 0}},
        "model": {"network": {"kind": "unet", "dims": 2, "base_channels": 8, "channel_mults": [1, 2],
                              "num_res_blocks": 1, "attention_levels": []}},
        "training": {"steps": 12, "batch_size": 8, "warmup_steps": 2, "log_every": 4,
                     "checkpoint_every": 6, "threads": 1, "augment": ["roll", "flip", "transpose"],
                     "validate_every": 4, "keep": "best"},
        "sampling": {"sampler": "dpmpp_2m", "steps": 3, "members": 2, "batch_size": 2, "chunk_size": 4, "seed": 11,
                     "grid": {"index": {"start": -2.5, "stop": -1.5, "num": 2},
                              "amplitude": {"values": [800000, 1600000], "units": "kpc2"}}},
        "evaluation": {"max_points": 2, "bins": 10, "training_points": 1},
        "output": {"dir": str(root / "out"), "title": "e2e test"},
        "cluster": {"kind": "local", "n_workers": 2, "threads_per_worker": 1, "dashboard": False},
    }


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    spec = small_pipeline(root)
    results = run_pipeline(spec, progress=False)
    return root, spec, results


def test_all_stages_write_their_outputs(finished):
    root, spec, results = finished
    out = root / "out"
    assert results["simulate"]["files"] == 12
    assert results["preprocess"]["n_samples"] == 24
    assert results["train"]["step"] == 12
    ckpt = load_checkpoint(out / "model.ckpt")
    # model selection on the validation run's loss: three evaluations, the best one kept
    record = ckpt["trainer_state"]["validation"]
    assert [h[0] for h in record["history"]] == [4, 8, 12]
    assert results["train"]["validation"]["best_step"] == record["best_step"]
    assert record["best_loss"] == min(h[1] for h in record["history"])
    assert ckpt["config"]["metadata"]["pipeline"]["name"] == "e2e"  # resolved config stored
    assert ckpt["config"]["metadata"]["fields"][0]["name"] == "density"
    with xr.open_dataset(out / "samples.nc") as ds:
        assert ds["density"].dims == ("index", "amplitude", "member", "x", "y")
        assert ds["density"].shape == (2, 2, 2, 16, 16)
        np.testing.assert_allclose(ds["amplitude"].values, [0.8, 1.6])  # kpc2 -> Mpc2
        assert ds["amplitude"].attrs["units"] in ("Mparsec2", "megaparsec2")
        assert ds["x"].attrs["units"] in ("Mparsec", "megaparsec", "Mpc")
        assert ds["density"].attrs["units"] == "1"
        values = ds["density"].values
        assert np.isfinite(values).all() and (values > 0).all()  # log transform inverted
        assert json.loads(ds.attrs["rho_pipeline_config"])["sampling"]["seed"] == 11
        assert ds.attrs["rho_checkpoint_sha256"] == results["train"]["checkpoint_sha256"]
        assert ds.attrs["rho_sampler"] == "dpmpp_2m" and ds.attrs["rho_steps"] == 3
    summary = json.loads((out / "evaluation" / "summary.json").read_text())
    assert len(summary["points"]) == 3           # two held-out points, then one training point
    assert [p["seen_in_training"] for p in summary["points"]] == [False, False, True]
    assert (out / "evaluation" / "report.html").is_file()
    assert "members per point" in summary["members"]
    assert summary["box_size"] == pytest.approx(100.0)
    assert "spectrum_error" in summary["points"][0]["metrics"]["density"]
    # the headline beside its noise floor, over the two held-out points only
    spec_row = summary["over_floor"]["density"]["spectrum_error"]
    held = [p["spectrum_error"] for p in summary["metrics"]["density"]["cases"] if not p["seen_in_training"]]
    assert spec_row["points"] == 2 and spec_row["split"] == "held_out"
    assert spec_row["value"] == pytest.approx(np.median([h["value"] for h in held]))
    assert spec_row["floor"] == pytest.approx(np.median([h["floor"] for h in held])) and spec_row["floor"] > 0
    assert spec_row["ratio"] == pytest.approx(spec_row["value"] / spec_row["floor"])
    assert results["evaluate"]["over_floor"] == summary["over_floor"]
    from rho_workflow.cli import format_summary
    from rho_workflow.pipeline import Pipeline

    printed = format_summary(Pipeline.from_source(spec, progress=False), results)
    assert (f"density: held-out spectrum error {spec_row['value']:.3g} = {spec_row['ratio']:.2g}x "
            f"its noise floor {spec_row['floor']:.3g}") in printed
    assert all(Path(f).is_file() for f in summary["figures"])
    assert any("spectrum_density" in f for f in summary["figures"])
    # held-out log-likelihood (probability-flow ODE) per point, in bits per dimension
    ll = xr.open_dataset(out / "evaluation" / "log_likelihood.nc")
    assert ll["log_likelihood"].attrs["units"] == "bit" and ll.sizes["field"] >= 2
    assert np.isfinite(ll["log_likelihood"].values).all()
    assert set(ll["case"].values) == {0, 1, 2}      # the training point's too: the gap is overfitting
    assert all(np.isfinite(p["log_likelihood_bits_per_dim"]) for p in summary["points"])
    state = json.loads((out / "run.json").read_text())
    assert set(state["stages"]) == {"simulate", "preprocess", "train", "sample", "evaluate"}


def test_output_passes_the_cf_checker(finished):
    root, _, _ = finished
    assert cf_high_priority(root / "out" / "samples.nc") == []


def test_resume_skips_finished_stages(finished):
    root, spec, results = finished
    again = Pipeline.from_source(spec, progress=False).run(["preprocess", "train", "sample"],
                                                           resume=True)
    assert again["preprocess"]["skipped"] and again["train"]["skipped"]
    assert again["sample"]["skipped"]
    # a changed sampling seed is a new sweep: it runs (and resumes nothing)
    changed = copy.deepcopy(spec)
    changed["sampling"]["seed"] = 12
    changed["output"]["filename"] = "samples-seed12.nc"
    rerun = Pipeline.from_source(changed, progress=False).run(["sample"], resume=True)
    assert rerun["sample"]["chunks_run"] == 2 and rerun["sample"]["chunks_skipped"] == 0


def test_cli_dry_run_stages_and_errors(finished, tmp_path, capsys):
    root, spec, _ = finished
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["run", str(path), "--dry-run", "--cluster", "{kind: local, n_workers: 3}"]) == 0
    text = capsys.readouterr().out
    assert "# resolved config" in text and "n_workers=3" in text
    assert "grid sweep: index[1]: 2 values" in text and "2 chunk task(s)" in text
    bad = copy.deepcopy(spec)
    bad["sampling"]["chunk_size"] = 3
    path.write_text(yaml.safe_dump(bad))
    assert main(["sample", str(path)]) == 2
    assert "sampling.chunk_size: must be a multiple" in capsys.readouterr().err
    no_validation = copy.deepcopy(spec)
    no_validation["data"]["split"]["validation"] = 0.0
    path.write_text(yaml.safe_dump(no_validation))
    assert main(["run", str(path), "--dry-run"]) == 2
    assert "training.validate_every: 4 computes the loss on the validation runs" in capsys.readouterr().err
    missing = copy.deepcopy(spec)
    missing["output"]["dir"] = str(tmp_path / "empty")
    with pytest.raises(PipelineError, match="run the train stage first"):
        Pipeline.from_source(missing, progress=False).sample(client=None)


def test_accessor_dataset_to_model_to_labeled_sweep():
    import rho_workflow.accessor  # noqa: F401  (registers .rho)
    from rho_workflow.accessor import sample_sweep

    rng = np.random.default_rng(0)
    index = rng.uniform(-3, -1, 24)
    x = np.linspace(5, 95, 8)
    ds = xr.Dataset(
        {"density": (("run", "x", "y"), rng.lognormal(size=(24, 8, 8)),
                     {"units": "1", "long_name": "density"})},
        coords={"index": ("run", index, {"units": "1"}), "x": ("x", x, {"units": "Mparsec"}),
                "y": ("y", x, {"units": "Mparsec"})})
    model = ds.rho.fit("density", params=["index"], sample_dim="run", log=True, steps=4,
                       batch_size=8, progress=False, device="cpu",
                       network={"kind": "unet", "dims": 2, "base_channels": 8, "channel_mults": [1, 2],
                                "num_res_blocks": 1, "attention_levels": []})
    out = ds.isel(run=slice(0, 3)).rho.sample(model, members=2, steps=2)
    assert out["density"].dims == ("case", "member", "x", "y")
    np.testing.assert_allclose(out["index"].values, index[:3])
    assert out["x"].attrs["units"] == "Mparsec" and out.attrs["Conventions"] == "CF-1.8"
    assert (out["density"].values > 0).all()
    grid = sample_sweep(model, grid={"index": {"start": -2.5, "stop": -1.5, "num": 3}}, members=2,
                        steps=2, batch_size=2)
    assert grid["density"].dims == ("index", "member", "x", "y")
    # log-likelihood of fields through the accessor = the API's, labelled along the runs
    few = ds.isel(run=slice(0, 2))
    ll = few["density"].rho.log_prob(model, "run")
    assert ll.dims == ("run",) and ll.attrs["units"] == "bit" and np.isfinite(ll.values).all()
    nats = model.log_prob(few["density"].values, [{"index": float(v)} for v in index[:2]], unit="nats")
    np.testing.assert_allclose(ll.values, nats / (64 * np.log(2)), rtol=1e-10)
    np.testing.assert_allclose(ll["index"].values, index[:2])


def test_gpu_stages_request_the_gpu_resource(finished, tmp_path):
    """``gpu: true`` tasks go to workers declaring GPU=1 (a CPU worker declares it here)."""
    root, spec, _ = finished
    gpu = copy.deepcopy(spec)
    gpu["output"]["dir"] = str(tmp_path / "gpu")
    gpu["training"].update(gpu=True, steps=2)
    gpu["sampling"].update(gpu=True)
    gpu["cluster"] = {"kind": "local", "n_workers": 1, "resources": {"GPU": 1}, "dashboard": False}
    import shutil

    shutil.copytree(root / "out" / "store", tmp_path / "gpu" / "store")
    results = run_pipeline(gpu, stages=["train", "sample"], progress=False)
    assert results["train"]["step"] == 2 and results["sample"]["n_samples"] == 8
