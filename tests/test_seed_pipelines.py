"""The seed experiments in pipelines/: each passes --dry-run as written, and runs end to end on a
local Dask cluster with tiny settings (a copied dict: the YAML files are left as they are),
writing its metrics netCDF and HTML report."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

from rho_workflow.cli import main
from rho_workflow.pipeline import run_pipeline

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"
SEEDS = ["spherical_harmonics", "gaussian_field", "lognormal_field", "spectral_lines"]
TINY_SIZE = {"spherical_harmonics": 8, "spectral_lines": 16}


@pytest.mark.parametrize("name", SEEDS + ["demo", "climate"])
def test_dry_run(name, capsys):
    assert main(["run", str(PIPELINES / f"{name}.yaml"), "--dry-run"]) == 0
    assert "stage evaluate" in capsys.readouterr().out


def tiny(name: str, root: Path) -> dict:
    spec = copy.deepcopy(yaml.safe_load((PIPELINES / f"{name}.yaml").read_text()))
    spec["simulate"].update(out_dir=str(root / "sims"), runs=16,
                            size=TINY_SIZE.get(name, 16))
    if "realizations" in spec["simulate"]:
        spec["simulate"]["realizations"] = 3
    spec["data"]["files"] = str(root / "sims" / "*.nc")
    if spec["data"]["split"]["held_out"] > 0:
        spec["data"]["split"].update(held_out=0.2, validation=0.0)
    spec["model"]["network"].update(base_channels=8, channel_mults=[1, 2])
    spec["training"].update(steps=4, warmup_steps=1, log_every=2, checkpoint_every=4, batch_size=4)
    spec["sampling"].update(steps=2, members=1, sampler="dpmpp_2m", batch_size=4, chunk_size=8)
    spec["evaluation"].update(max_points=2, training_points=1, members=3, log_likelihood="none")
    if spec["evaluation"].get("compare"):
        spec["evaluation"]["reference_steps"] = 4
    spec["output"]["dir"] = str(root / "out")
    spec["cluster"]["dashboard"] = False
    return spec


@pytest.mark.parametrize("name", SEEDS)
def test_smoke_run(name, tmp_path):
    start = time.perf_counter()
    results = run_pipeline(tiny(name, tmp_path), progress=False)
    wall = time.perf_counter() - start
    out = tmp_path / "out" / "evaluation"
    assert (out / "report.html").is_file()
    var = {"spherical_harmonics": "density", "gaussian_field": "density_contrast",
           "lognormal_field": "density", "spectral_lines": "line_profile"}[name]
    ds = xr.open_dataset(out / f"metrics_{var}.nc")
    assert (ds["n_generated"].values == 3).all()
    assert np.isfinite(ds["wasserstein_1"].values).all()
    assert results["evaluate"]["report"].endswith("report.html")
    if name == "spherical_harmonics":                 # 3D: slices and projections
        assert (out / f"projections_{var}.png").is_file()
    if name in ("spherical_harmonics", "spectral_lines"):  # deterministic: every floor 0
        assert (ds["wasserstein_1_floor"].values == 0).all()
        assert "deterministic" in ds.attrs["noise_floor_method"]
    if name == "gaussian_field":                      # realizations per run: a floor everywhere
        assert (ds["n_reference"].values >= 2).all()
        assert np.isfinite(ds["spectrum_error_floor"].values).all()
    if name == "lognormal_field":                     # evaluation.compare, in the same dataset
        assert list(ds["variant"].values) == ["model", "ddpm-4", "hash-encoder"]
        assert ds["compare_spectrum_error"].dims == ("variant", "case")
        np.testing.assert_array_equal(ds["compare_spectrum_error"].sel(variant="model").values,
                                      ds["spectrum_error"].values)
        assert np.isfinite(ds["compare_wasserstein_1"].values).all()
        assert (out / "model_hash.ckpt").is_file() and (out / f"comparison_{var}.png").is_file()
        assert "other generators" in (out / "report.html").read_text()
    print(f"{name}: tiny smoke run {wall:.0f} s")
