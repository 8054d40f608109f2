"""Consolidated sweep outputs: labels, streaming by parts, CF compliance (IOOS checker)."""

from __future__ import annotations

import json
import math

import cf_xarray  # noqa: F401  (the .cf accessor)
import numpy as np
import pytest
import xarray as xr
from cf_check import cf_report

from rho_workflow.params import Parameter, ParamSpace
from rho_workflow.workflow.output import (flat_range_boxes, provenance_attrs, sweep_dataset,
                                          write_sweep_output)
from rho_workflow.workflow.sweep import SweepRequest, plan_sweep

SPACE = ParamSpace([Parameter("index", "1", low=-3, high=-1),
                    Parameter("amplitude", "Mpc2", low=0.5, high=2.0)])
CENTRES = list(np.linspace(100 / 16, 100 - 100 / 16, 8))
METADATA = {
    "fields": [{"name": "density", "units": "1",
                "long_name": "lognormal density in units of the mean density"}],
    "spatial": {"dims": ["x", "y"], "coords": {d: {"values": CENTRES, "units": "Mpc"} for d in "xy"}},
}


def plan(layout="grid", chunk_size=4):
    kw = dict(grid=None, table=None, table_units={}, members=3, seed=5, sampler="dpmpp_2m", steps=5,
              guidance=0.0, allow_extrapolation=False, batch_size=2, chunk_size=chunk_size)
    if layout == "grid":
        kw["grid"] = {"index": [-2.5, -2.0], "amplitude": {"start": 0.5, "stop": 2.0, "num": 3}}
    else:
        kw["table"] = [{"index": -2.2, "amplitude": 0.7}, {"index": -1.1, "amplitude": 1.9}]
    return plan_sweep(SweepRequest(**kw), SPACE)


def write(path, p, samples, fmt="netcdf"):
    parts = ((c.start, c.stop, samples[c.start:c.stop]) for c in p.chunks)
    attrs = provenance_attrs(p, checkpoint_sha256="0" * 64, config={"name": "test"}, title="test sweep")
    return write_sweep_output(path, p, METADATA, parts, attrs=attrs, fmt=fmt, complevel=4)


def test_flat_range_boxes_cover_exactly():
    rng = np.random.default_rng(0)
    for _ in range(200):
        shape = tuple(int(s) for s in rng.integers(1, 5, size=rng.integers(1, 4)))
        n = math.prod(shape)
        start = int(rng.integers(0, n))
        stop = int(rng.integers(start, n + 1))
        out = np.full(n, -1)
        view = out.reshape(shape)
        boxes = list(flat_range_boxes(start, stop, shape))
        for box, a, b in boxes:
            view[box] = np.arange(a, b).reshape([s.stop - s.start for s in box])
        expected = np.full(n, -1)
        expected[start:stop] = np.arange(start, stop)
        assert np.array_equal(out, expected)
        assert len(boxes) <= max(1, 2 * len(shape) - 1)


@pytest.mark.parametrize("layout", ["grid", "table"])
def test_netcdf_layout_labels_and_values(tmp_path, layout):
    p = plan(layout)
    samples = np.random.default_rng(1).lognormal(size=(p.n_samples, 1, 8, 8))
    path = write(tmp_path / "out.nc", p, samples)
    with xr.open_dataset(path) as ds:
        dims = ("index", "amplitude") if layout == "grid" else ("case",)
        assert ds["density"].dims == (*dims, "member", "x", "y")
        assert ds["amplitude"].attrs["units"] in ("megaparsec2", "Mpc2")
        assert ds["x"].attrs["units"] in ("megaparsec", "Mpc")
        assert ds["member"].attrs["standard_name"] == "realization"
        flat = ds["density"].values.reshape(p.n_samples, 8, 8)
        assert np.array_equal(flat, samples[:, 0].astype(np.float32))
        # sample m of point k sits at the point's coordinates
        k, m = p.n_points - 1, 2
        point = p.points[k]
        sel = ds["density"].sel(member=m, **({n: point[n] for n in p.names} if layout == "grid"
                                             else {"case": k}))
        assert np.array_equal(sel.values, samples[k * 3 + m, 0].astype(np.float32))
        assert ds.attrs["Conventions"] == "CF-1.8" and ds.attrs["rho_seed"] == 5
        assert json.loads(ds.attrs["rho_pipeline_config"]) == {"name": "test"}
        assert ds["density"].encoding["zlib"]
    in_memory = sweep_dataset(p, samples.astype(np.float32), METADATA)
    assert in_memory["density"].dims == ds["density"].dims


def test_zarr_region_writes_match_netcdf(tmp_path):
    pytest.importorskip("zarr")
    p = plan(chunk_size=2)
    samples = np.random.default_rng(2).normal(size=(p.n_samples, 1, 8, 8))
    nc = write(tmp_path / "out.nc", p, samples)
    zr = write(tmp_path / "out.zarr", p, samples, fmt="zarr")
    with xr.open_dataset(nc) as a, xr.open_zarr(zr) as b:
        xr.testing.assert_identical(a["density"].load(), b["density"].load())


@pytest.mark.parametrize("layout", ["grid", "table"])
def test_passes_the_ioos_cf_checker(tmp_path, layout):
    p = plan(layout)
    path = write(tmp_path / "out.nc", p, np.ones((p.n_samples, 1, 8, 8)))
    result = cf_report(path)
    high = [msg for item in result["high_priorities"] for msg in item["msgs"]]
    assert high == [], high
    # no axis by position: x/y of a box are no longitude/latitude (and need no X/Y axis)
    medium = [msg for item in result["medium_priorities"] for msg in item["msgs"]]
    assert medium == [], medium
    assert result["scored_points"] > 0


GRID_METADATA = {
    "fields": [{"name": "tas", "units": "K", "standard_name": "air_temperature",
                "attrs": {"cell_methods": "index: mean", "grid_mapping": "crs"}}],
    "spatial": {
        "dims": ["y", "x"],
        "coords": {"y": {"values": CENTRES, "units": "degrees_north",
                         "attrs": {"standard_name": "latitude", "axis": "Y"}},
                   "x": {"values": CENTRES, "units": "degrees_east",
                         "attrs": {"standard_name": "longitude", "axis": "X"}}},
        "aux": {"area": {"dims": ["y", "x"], "values": np.full((8, 8), 4.0).tolist(),
                         "units": "km2", "attrs": {"long_name": "cell area"}}},
        "scalars": {"height": {"value": 2.0, "attrs": {"units": "m", "standard_name": "height",
                                                       "positive": "up", "axis": "Z"}}},
        "grid_mapping": {"crs": {"grid_mapping_name": "latitude_longitude"}}},
}


@pytest.mark.parametrize("fmt", ["netcdf", "zarr"])
def test_grid_extras_and_output_units_round_trip(tmp_path, fmt):
    if fmt == "zarr":
        pytest.importorskip("zarr")
    p = plan()
    samples = np.full((p.n_samples, 1, 8, 8), 273.15 + 10.0)
    path = tmp_path / ("out.nc" if fmt == "netcdf" else "out.zarr")
    parts = ((c.start, c.stop, samples[c.start:c.stop]) for c in p.chunks)
    write_sweep_output(path, p, GRID_METADATA, parts, fmt=fmt, units={"tas": "degC"},
                       attrs=provenance_attrs(p, checkpoint_sha256=None))
    with xr.open_dataset(path, engine="netcdf4" if fmt == "netcdf" else "zarr") as ds:
        np.testing.assert_allclose(ds["tas"].values, 10.0, rtol=1e-6)  # K -> degC
        assert ds["tas"].attrs["units"] == "degC"
        assert ds["tas"].attrs["cell_methods"] == "index: mean"
        assert ds["tas"].attrs["grid_mapping"] == "crs"
        assert ds["crs"].attrs == {"grid_mapping_name": "latitude_longitude"}
        assert set(ds["tas"].encoding["coordinates"].split()) == {"area", "height"}
        assert float(ds["height"]) == 2.0 and ds["area"].dims == ("y", "x")
        assert ds.cf.axes["X"] == ["x"] and ds.cf.axes["Y"] == ["y"] and ds.cf.axes["Z"] == ["height"]
    if fmt == "netcdf":
        report = cf_report(path)
        assert [m for i in report["high_priorities"] for m in i["msgs"]] == []
