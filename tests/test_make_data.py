"""make-data: CF-1.8 sweeps of every kind, deterministic, ingestible through configuration."""

from __future__ import annotations

import subprocess
import sys

import netCDF4
import numpy as np
import pytest
import xarray as xr
from cf_check import cf_high_priority

from rho_workflow.data import pointdata, synthetic
from rho_workflow.data.config import DataConfig
from rho_workflow.data.ingest import build_fields, plan_ingest
from rho_workflow.data.make_data import ALL_KINDS, DESIGN_STREAM, LAYOUTS, main, write_sweep
from rho_workflow.data.synthetic.climate import CLIMATE_KINDS, SCENARIOS, land_mask
from rho_workflow.data.units import parse_units

CLIMATE_PARAMS = {"experiment_id": {"source": "global_attribute", "kind": "categorical"},
                  "radiative_forcing": {"source": "global_attribute", "units": "W m-2"}}
CONFIGS = {
    "spherical-harmonics": dict(variables=["density"], spatial_dims=["x", "y", "z"], units="1",
                                params={"l": {"source": "global_attribute", "kind": "categorical"},
                                        "m": {"source": "global_attribute", "kind": "categorical"}}),
    "gaussian-field": dict(variables=["density_contrast"], spatial_dims=["x", "y"], units="1",
                           params={"index": {"source": "filename",
                                             "pattern": r"index(?P<value>[-+0-9.]+)\.nc$"},
                                   "amplitude": {"source": "coordinate", "units": "Mparsec2"}}),
    "lognormal-field": dict(variables=["density"], spatial_dims=["x", "y"],
                            sample_dims=["realization"], units="1",
                            params={"index": {"source": "variable_attribute"},
                                    "amplitude": {"source": "variable_attribute",
                                                  "units": "Mparsec2"}}),
    "spectral-lines": dict(variables=["line_profile"], spatial_dims=["wavenumber"],
                           sample_dims=["run"], units="cm",
                           params={"temperature": {"source": "coordinate", "units": "K"},
                                   "pressure": {"source": "coordinate", "units": "hPa"}}),
    "swiss-roll": dict(variables=["position"], spatial_dims=["component"], sample_dims=["point"],
                       units="1", params={"noise": {"source": "global_attribute"},
                                          "turns": {"source": "global_attribute"}}),
    "heartbeat": dict(variables=["spike"], spatial_dims=["step"], sample_dims=["sequence"],
                      units="1", params={"period": {"source": "global_attribute", "units": "s",
                                                    "kind": "categorical"}}),
    "climate-air": dict(variables=["tas"], spatial_dims=["latitude", "longitude"],
                        sample_dims=["time"], units="K", params=CLIMATE_PARAMS),
    "climate-ocean": dict(variables=["tos"], spatial_dims=["y", "x"], sample_dims=["time_counter"],
                          units="K", missing="fixed-mask", params=CLIMATE_PARAMS),
}
RUNS = 5


def design(kind, runs=RUNS, seed=0):
    if kind in CLIMATE_KINDS:  # the scenarios in turn, in the order of the file names
        names = sorted((f"{list(SCENARIOS)[r % len(SCENARIOS)]}_r{r + 1}", r) for r in range(runs))
        return [{"experiment_id": n.split("_")[0],
                 "radiative_forcing": SCENARIOS[n.split("_")[0]]} for n, _ in names]
    rng = np.random.default_rng([seed, DESIGN_STREAM])
    if kind in pointdata.POINT_KINDS:
        return pointdata.default_point_params(kind, runs, rng)
    return synthetic.default_points(kind, runs, rng)


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweeps")
    for kind in ALL_KINDS:
        assert main([kind, str(root / kind), "--runs", str(RUNS), "--seed", "0", "--size", "6",
                     "--points", "8", "--realizations", "2", "--runs-per-file", "3"]) == 0
    return root


def test_command_line_module(tmp_path):
    out = subprocess.run([sys.executable, "-m", "rho_workflow.data.make_data", "heartbeat",
                          str(tmp_path), "--runs", "2", "--seed", "3", "--points", "4"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "wrote 2 heartbeat file(s)" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "rho_workflow.data.make_data", "heartbeat",
                          str(tmp_path), "--runs", "0"], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and "--runs=0" in bad.stderr


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_files_are_cf_with_units_everywhere(sweeps, kind):
    paths = sorted((sweeps / kind).glob("*.nc"))
    assert len(paths) == (2 if kind == "spectral-lines" else RUNS)
    layout, sample_dim = LAYOUTS[kind]
    for path in paths:
        with netCDF4.Dataset(path) as nc:
            assert nc.Conventions == "CF-1.8" and "make-data" in nc.history
            for name, var in nc.variables.items():
                if "grid_mapping_name" in var.ncattrs():
                    continue  # a grid-mapping variable holds no values (CF 5.6): no units
                assert "units" in var.ncattrs(), f"{path.name}:{name} has no units"
                if "since" not in var.units.split():  # a CF time coordinate is no physical unit
                    parse_units(var.units)
            field = nc.variables[nc.rho_field_variable]
            where = {"global_attribute": nc, "variable_attribute": field}.get(layout)
            for p in CONFIGS[kind]["params"]:
                if where is not None:
                    assert p in where.ncattrs()
                elif layout in ("coordinate", "scalar_coordinate") and p in nc.variables:
                    assert nc.variables[p].dimensions == ((sample_dim,) if sample_dim else ())
            if sample_dim:
                assert sample_dim in field.dimensions


def test_udunits_accepts_every_unit_string(sweeps):
    cf_units = pytest.importorskip("cf_units")
    for path in sorted(sweeps.glob("*/*.nc")):
        with netCDF4.Dataset(path) as nc:
            for var in nc.variables.values():
                if "units" in var.ncattrs():
                    cf_units.Unit(var.units)
            for attr in nc.ncattrs():
                if attr.endswith("_units"):
                    cf_units.Unit(nc.getncattr(attr))


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_sweep_ingests_with_its_design(sweeps, kind):
    extra = {"sample_dims": ["realization"]} if kind == "gaussian-field" else {}  # --realizations 2
    config = DataConfig.from_dict({**CONFIGS[kind], **extra, "files": str(sweeps / kind / "*.nc")})
    plan = plan_ingest(config)
    per_run = {"lognormal-field": 2, "gaussian-field": 2, "swiss-roll": 8, "heartbeat": 8,
               "climate-air": 2, "climate-ocean": 2}.get(kind, 1)
    assert plan.n_samples == RUNS * per_run
    expected = design(kind)
    got = plan.points[::per_run]
    for e, g in zip(expected, got):
        for key, value in e.items():
            assert g[key] == (value if isinstance(value, str) else pytest.approx(value, rel=1e-6))
    fields = build_fields(plan).compute()
    if kind == "climate-ocean":  # land is NaN in every field, the ocean finite
        land = land_mask(6, 6)
        assert np.isnan(fields[..., land]).all() and np.isfinite(fields[..., ~land]).all()
    else:
        assert np.isfinite(fields).all()


@pytest.mark.parametrize("kind", ["gaussian-field", "swiss-roll", "lognormal-field"])
def test_deterministic_per_seed_and_run(tmp_path, kind):
    a = write_sweep(kind, tmp_path / "a", runs=3, seed=11, size=6, points=8)
    b = write_sweep(kind, tmp_path / "b", runs=3, seed=11, size=6, points=8)
    c = write_sweep(kind, tmp_path / "c", runs=3, seed=12, size=6, points=8)
    for pa, pb, pc in zip(a, b, c):
        da_, db, dc = (xr.load_dataset(p) for p in (pa, pb, pc))
        name = da_.attrs["rho_field_variable"]
        np.testing.assert_array_equal(da_[name].values, db[name].values)
        assert not np.array_equal(da_[name].values, dc[name].values)


def test_packed_and_varying_units(tmp_path):
    paths = write_sweep("gaussian-field", tmp_path, runs=2, seed=0, size=6, packed=True,
                        vary_units=True)
    with netCDF4.Dataset(paths[0]) as nc:
        var = nc.variables["density_contrast"]
        assert var.dtype == np.int16 and "scale_factor" in var.ncattrs()
    with netCDF4.Dataset(paths[1]) as nc:
        assert nc.variables["x"].units == "kparsec"
        assert nc.variables["amplitude"].units == "kparsec2"
    config = DataConfig.from_dict({**CONFIGS["gaussian-field"], "files": str(tmp_path / "*.nc")})
    plan = plan_ingest(config)  # same grid and parameters after conversion
    design0 = design("gaussian-field", runs=2)
    assert [p["amplitude"] for p in plan.points] == pytest.approx(
        [d["amplitude"] for d in design0])
    exact, _ = synthetic.generate("gaussian-field", design0[0], size=6,
                                  rng=np.random.default_rng([0, 0, 0]))
    packed = build_fields(plan).compute()[0, 0]
    step = (exact.max() - exact.min()) / 65000
    np.testing.assert_allclose(packed, exact, atol=step + 1e-6)


def test_point_data_closed_forms():
    rng = np.random.default_rng(0)
    beats = pointdata.heartbeat(50, 5, rng)
    assert beats.shape == (50, 20) and set(np.unique(beats)) == {0, 1}
    assert (beats.sum(axis=1) == 4).all()
    for row in beats:
        assert set(np.diff(np.flatnonzero(row))) == {5}
    roll = pointdata.swiss_roll(2000, 0.0, 1.0, rng)
    radius = np.hypot(roll[:, 0], roll[:, 1]) * 10.0
    angle = np.unwrap(np.arctan2(roll[:, 1], roll[:, 0])[np.argsort(radius)])
    assert radius.min() >= 1.5 * np.pi - 1e-9 and radius.max() <= 4.5 * np.pi + 1e-9
    assert np.allclose(np.diff(radius[np.argsort(radius)]) >= 0, True)
    assert np.ptp(angle) == pytest.approx(3.0 * np.pi, rel=0.01)
    with pytest.raises(ValueError, match="period"):
        pointdata.heartbeat(3, 0, rng)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_passes_the_ioos_cf_checker(sweeps, kind, tmp_path):
    path = sorted((sweeps / kind).glob("*.nc"))[0]
    high = cf_high_priority(path)
    assert high == [], high
