"""Posteriors through the API, the pipeline and the CLI, on a real tiny model and a local Dask cluster.

Conditioned sweeps (stations in other units, a known region) written as labeled datasets;
``rho-workflow infer`` writing the posterior dataset and its corner plot; and the bad inputs
of the posterior issue (observations outside the grid, inconvertible units, NaN, zero error,
a prior outside the range, a field of the wrong shape), each one clear message.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

from rho_workflow.cli import main
from rho_workflow.data.observations import KnownRegion, NoisyField, ObservationError, Stations
from rho_workflow.pipeline import Pipeline
from rho_workflow.training.model import TrainedModel
from test_pipeline_e2e import small_pipeline


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("posterior")
    spec = small_pipeline(root)
    spec["evaluation"] = {"enabled": False}
    Pipeline.from_source(spec, progress=False).run(["simulate", "preprocess", "train"])
    model = TrainedModel.load(root / "out" / "model.ckpt", device="cpu")
    return root, spec, model


def _stations(path: Path, x_km, y_km, values, error, value_units="1", pos_units="km") -> Path:
    ds = xr.Dataset({"density": ("station", np.asarray(values, float), {"units": value_units}),
                     "density_error": ("station", np.asarray(error, float), {"units": value_units}),
                     "x": ("station", np.asarray(x_km, float), {"units": pos_units}),
                     "y": ("station", np.asarray(y_km, float), {"units": pos_units})})
    ds.to_netcdf(path)
    return path


MPC_KM = 3.0856775814913673e19  # km per Mpc


def test_conditioned_sweep_honours_stations_and_known_region(trained, tmp_path):
    root, spec, model = trained
    xs = np.asarray(model.metadata["spatial"]["coords"]["x"]["values"])
    # two stations on cell centres, positions in km (the grid is in Mpc), errors tiny
    obs = _stations(tmp_path / "stations.nc", [xs[3] * MPC_KM, xs[10] * MPC_KM], [xs[5] * MPC_KM, xs[8] * MPC_KM],
                    [2.0, 0.5], [0.01, 0.01])
    cond_spec = copy.deepcopy(spec)
    cond_spec["sampling"]["conditioning"] = {"observations": str(obs), "cg_iters": 10}
    cond_spec["output"]["filename"] = "conditioned.nc"
    Pipeline.from_source(cond_spec, progress=False).run(["sample"])
    with xr.open_dataset(root / "out" / "conditioned.nc") as ds:
        d = ds["density"]
        assert d.dims == ("index", "amplitude", "member", "x", "y")
        at1 = d.isel(x=3, y=5).values
        at2 = d.isel(x=10, y=8).values
        assert np.abs(at1 - 2.0).max() < 0.1 and np.abs(at2 - 0.5).max() < 0.05, (at1, at2)
        assert "stations rows" in ds.attrs["conditioning"]
        assert len(ds.attrs["conditioning_file_sha256"]) == 64
    # a known region: the lower-left quarter held fixed
    grid = np.full((16, 16), np.nan)
    grid[:8, :8] = np.linspace(0.5, 2.0, 64).reshape(8, 8)
    known = tmp_path / "known.nc"
    xr.Dataset({"density": (("x", "y"), grid, {"units": "1"})}).to_netcdf(known)
    cond_spec["sampling"]["conditioning"] = {"observations": str(known)}
    cond_spec["output"]["filename"] = "inpainted.nc"
    Pipeline.from_source(cond_spec, progress=False).run(["sample"])
    with xr.open_dataset(root / "out" / "inpainted.nc") as ds:
        v = ds["density"].values  # (index, amplitude, member, x, y)
        np.testing.assert_allclose(v[..., :8, :8], np.broadcast_to(grid[:8, :8], v[..., :8, :8].shape), rtol=2e-3)
        assert np.isfinite(v).all()


def test_api_observations_and_general_log_r(trained):
    _, _, model = trained
    point = {"index": -2.0, "amplitude": 1.2}
    noisy = np.full((16, 16), 1.0)
    s = model.sample(point, 2, observe=NoisyField(noisy, 0.05), steps=6, sampler="dpmpp_2m", cg_iters=8)
    assert s.shape == (1, 2, 1, 16, 16) and np.isfinite(s).all()
    target = 3.0  # log r pulls the mean of the field toward 3 (physical units)
    s = model.sample(point, 2, observe=lambda x: -0.5 * ((x.mean(dim=(1, 2, 3)) - target) / 0.05) ** 2,
                     steps=8, sampler="dpmpp_2m")
    plain = model.sample(point, 2, steps=8, sampler="dpmpp_2m")
    assert abs(s.mean() - target) < abs(plain.mean() - target)


@pytest.mark.parametrize("bad, match", [
    (Stations({"x": [1e6], "y": [50.0]}, [1.0], [0.1]), r"station 0 has x = 1e\+06 .*within the grid's cell centres"),
    (Stations({"x": [50.0], "y": [50.0]}, [np.nan], [0.1]), "station 0 has value NaN"),
    (Stations({"x": [50.0], "y": [50.0]}, [1.0], [0.0]), "station 0 has error 0"),
    (Stations({"x": [50.0]}, [1.0], [0.1]), r"stations without \['y'\] positions"),
    (NoisyField(np.ones((8, 8)), 0.1), r"gridded observations have the model's grid shape \(16, 16\)"),
    (NoisyField(np.ones((16, 16)), -1.0), "error standard deviation is finite and > 0"),
    (KnownRegion(np.full((16, 16), -1.0)), "positive for a log transform|domain"),
])
def test_bad_observations_are_one_clear_error(trained, bad, match):
    _, _, model = trained
    with pytest.raises(ObservationError, match=match):
        model.sample({"index": -2.0, "amplitude": 1.2}, 1, observe=bad, steps=2, sampler="ddim")


def _write_yaml(spec: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(spec))
    return path


def test_cli_infer_writes_posterior_and_corner_plot(trained, capsys):
    root, spec, model = trained
    yml = _write_yaml(spec, root / "pipeline.yaml")
    sim = sorted((root / "sims").glob("*.nc"))[0]
    code = main(["-q", "infer", str(yml), "--observed", str(sim), "--prior", "{amplitude: [0.6, 1.8]}",
                 ])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "index =" in out and "amplitude =" in out
    files = sorted((root / "out" / "inference").glob(f"posterior_{sim.stem}*"))
    assert {f.suffix for f in files} == {".nc", ".png"} and len(files) == 4  # two realizations in the file
    with xr.open_dataset([f for f in files if f.suffix == ".nc"][0]) as ds:
        assert ds["index"].attrs["units"] == "1"
        assert ds["amplitude"].attrs["units"] == model.param_space["amplitude"].units
        assert float(ds["amplitude"].min()) >= 0.6 and float(ds["amplitude"].max()) <= 1.8
        assert np.isclose(float(np.exp(ds["log_posterior_mass"]).sum()), 1.0)
        summary = json.loads(ds.attrs["summary"])
        assert summary["index"]["ci95"][0] <= summary["index"]["mean"] <= summary["index"]["ci95"][1]
        assert len(ds.attrs["checkpoint_sha256"]) == 64


@pytest.mark.parametrize("args, match", [
    (["--prior", "{index: [-5, -1]}"], r"within the trained range"),
    (["--prior", "[1, 2]"], "must be a mapping"),
    (["--method", "grid", "--variable", "temperature"], "one of the model's fields"),
])
def test_cli_infer_bad_input_is_one_message(trained, capsys, args, match):
    root, spec, _ = trained
    yml = _write_yaml(spec, root / "pipeline.yaml")
    sim = sorted((root / "sims").glob("*.nc"))[0]
    assert main(["-q", "infer", str(yml), "--observed", str(sim), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") <= 4 and "Traceback" not in err
    import re
    assert re.search(match, err), err


def test_cli_infer_wrong_grid_and_missing_file(trained, tmp_path, capsys):
    root, spec, _ = trained
    yml = _write_yaml(spec, root / "pipeline.yaml")
    small = tmp_path / "small.nc"
    xr.Dataset({"density": (("x", "y"), np.ones((8, 8)), {"units": "1"})}).to_netcdf(small)
    assert main(["-q", "infer", str(yml), "--observed", str(small)]) == 2
    assert "the model's grid is" in capsys.readouterr().err
    assert main(["-q", "infer", str(yml), "--observed", str(tmp_path / "nope.nc")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_conditioning_file_errors_at_config_time(trained, tmp_path):
    from rho_workflow.config import PipelineConfig
    from rho_workflow.errors import ConfigError

    _, spec, _ = trained
    bad = copy.deepcopy(spec)
    bad["sampling"]["conditioning"] = {"observations": str(tmp_path / "missing.nc")}
    with pytest.raises(ConfigError, match="sampling.conditioning.observations.*does not exist"):
        PipelineConfig.from_dict(bad)
    units = _stations(tmp_path / "kelvin.nc", [1.0], [1.0], [1.0], [0.1], value_units="K")
    bad["sampling"]["conditioning"] = {"observations": str(units)}
    with pytest.raises(ObservationError, match="'K' cannot be converted to '1'"):
        Pipeline.from_source(bad, progress=False).run(["sample"])


def test_dry_run_checks_the_observations_against_the_trained_model(trained, tmp_path, capsys):
    root, spec, _ = trained
    dry = copy.deepcopy(spec)
    dry["sampling"]["conditioning"] = {"observations": str(_stations(tmp_path / "ok.nc", [50.0], [50.0], [1.0], [0.1],
                                                                     pos_units="Mparsec"))}
    assert main(["-q", "run", str(_write_yaml(dry, tmp_path / "p.yaml")), "--dry-run"]) == 0
    assert "conditioned on the observations in ok.nc (1 stations rows)" in capsys.readouterr().out
    dry["sampling"]["conditioning"] = {"observations": str(_stations(tmp_path / "far.nc", [5e3], [50.0], [1.0], [0.1],
                                                                     pos_units="Mparsec"))}
    assert main(["-q", "run", str(_write_yaml(dry, tmp_path / "p.yaml")), "--dry-run"]) == 2
    assert "station 0 has x = 5000" in capsys.readouterr().err
