"""The demo pipeline's evaluate stage writes a self-contained HTML report that a real headless
browser (Debian's chromium) renders with all its figures; the metrics netCDF has every score
with its noise floor."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml
from matplotlib.image import imread

from rho_workflow.pipeline import run_pipeline

DEMO = Path(__file__).resolve().parents[1] / "pipelines" / "demo.yaml"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


def tiny_demo(root: Path) -> dict:
    """pipelines/demo.yaml with tiny settings (a copied dict; the file is left as it is)."""
    spec = copy.deepcopy(yaml.safe_load(DEMO.read_text()))
    spec["simulate"].update(out_dir=str(root / "sims"), runs=16, realizations=4, size=16)
    spec["data"]["files"] = str(root / "sims" / "*.nc")
    spec["data"]["split"]["held_out"] = 0.2
    spec["model"]["network"].update(base_channels=8, channel_mults=[1, 2])
    spec["training"].update(steps=10, warmup_steps=2, log_every=5, checkpoint_every=10)
    spec["sampling"].update(steps=4, members=2, sampler="dpmpp_2m", batch_size=8, chunk_size=16)
    spec["evaluation"].update(max_points=2, training_points=1, log_likelihood="none")
    spec["output"]["dir"] = str(root / "out")
    spec["cluster"]["dashboard"] = False
    return spec


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo_report")
    results = run_pipeline(tiny_demo(root), progress=False)
    return root / "out" / "evaluation", results


def browser() -> str | None:
    return next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)


def test_demo_evaluation_writes_metrics_with_noise_floors(demo_run):
    out, results = demo_run
    ev = results["evaluate"]
    assert ev["members"] == 20                        # resolving_members(4): floor within 10%
    ds = xr.open_dataset(out / "metrics_density.nc")
    assert ds.sizes["case"] == 3 and list(ds["seen_in_training"].values) == [0, 0, 1]
    for name in ("spectrum_error", "wasserstein_1", "crps_fair", "minkowski_euler_error"):
        assert np.isfinite(ds[name].values).all() and np.isfinite(ds[f"{name}_floor"].values).all()
    assert (ds["n_generated"].values == 20).all()
    assert ds["k"].attrs["units"] == "rad Mparsec-1"
    assert "split" in ds.attrs["noise_floor_method"]
    assert "20 generated members per point" in ds.attrs["members"]


def test_report_renders_in_headless_chromium(demo_run, tmp_path):
    exe = browser()
    if exe is None:
        pytest.skip(f"no headless browser ({', '.join(BROWSERS)}) on PATH: apt-get install chromium")
    report = demo_run[0] / "report.html"
    text = report.read_text()
    n_images = text.count("<img ")
    assert n_images >= 5 and "src='data:image/png;base64," in text
    assert "http://" not in text and "https://" not in text      # self-contained
    flags = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--virtual-time-budget=10000", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(flags + ["--dump-dom", report.as_uri()], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    rendered = re.search(r'data-figures-rendered="(\d+)"', dom)
    assert rendered is not None, dom[:500]
    assert int(rendered.group(1)) == n_images          # every embedded figure was decoded
    assert "noise floor" in dom and "<table>" in dom
    shot = tmp_path / "report.png"
    subprocess.run(flags + [f"--screenshot={shot}", "--window-size=1280,2400", report.as_uri()],
                   capture_output=True, timeout=120, check=True)
    pixels = imread(shot)[..., :3]
    assert pixels.std() > 0.05                           # not a blank page
