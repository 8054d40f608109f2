"""Climate files in, files climate stacks accept out (issue 13).

The files come from ``make-data climate-air`` (Met Office-like: ``tas`` in K on a 360-day
calendar, regular lat/lon across the dateline, scalar ``height``, ``cell_methods``, a
grid-mapping variable) and ``make-data climate-ocean`` (NEMO-like: ``tos`` in degree_C on a
noleap calendar, curvilinear grid with 2D ``nav_lat``/``nav_lon`` wrapping at the dateline,
land NaN). Both go through ``rho-workflow run`` with tiny settings; the outputs are opened
with xarray (cftime decoding) and cf-xarray and checked by the IOOS CF checker.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import cftime
import numpy as np
import pytest
import xarray as xr
import yaml
from cf_check import cf_findings

from rho_workflow.cli import main
from rho_workflow.data.calendars import CalendarError, to_time_offsets
from rho_workflow.data.config import DataConfig
from rho_workflow.data.ingest import plan_ingest
from rho_workflow.data.make_data import write_sweep
from rho_workflow.data.synthetic.climate import land_mask
from rho_workflow.data.transforms import Bounded
from rho_workflow.errors import ConfigError
from rho_workflow.evaluate.metrics import compare_fields
from rho_workflow.params import Parameter, ParamSpace
from rho_workflow.workflow.sweep import SweepRequest, plan_sweep

SIZE, MONTHS = 16, 4
#: the CF checker's medium finding that remains, with its reason: the sweep's dims are
#: (*parameters, member, *grid) by design (sample numbers are C order over the sample dims);
#: a time parameter among the parameters is a T axis with ``member`` right of it.
DIM_ORDER = "spatio-temporal dimensions are not in the recommended order"


def pipeline(root: Path, kind: str) -> dict:
    air = kind == "climate-air"
    var, time = ("tas", "time") if air else ("tos", "time_counter")
    return {
        "name": kind,
        "simulate": {"kind": kind, "out_dir": str(root / "sims"), "runs": 2,
                     "realizations": MONTHS, "size": SIZE, "seed": 0},
        "data": {
            "files": str(root / "sims" / "*.nc"), "variables": [var],
            "spatial_dims": ["latitude", "longitude"] if air else ["y", "x"],
            "sample_dims": [time], "units": {var: "K"},
            "missing": "error" if air else "fixed-mask",
            "params": {"scenario": {"source": "global_attribute", "name": "experiment_id",
                                    "kind": "categorical"},
                       # no calendar declared: read from the files (360_day, noleap)
                       "day": {"source": "time", "name": time,
                               "units": "days since 2090-01-01"}},
            "bounds": {var: [180.0, 340.0]} if air else {var: [-1.9, 40.0, "degC"]},
            "split": {"validation": 0.0, "held_out": 0.25, "by": "params", "seed": 1},
        },
        "model": {"network": {"kind": "unet", "dims": 2, "base_channels": 8,
                              "channel_mults": [1, 2], "num_res_blocks": 1,
                              "attention_levels": []}},
        "training": {"steps": 4, "batch_size": 4, "warmup_steps": 1, "log_every": 2,
                     "checkpoint_every": 4, "threads": 1},
        "sampling": {"sampler": "dpmpp_2m", "steps": 2, "members": 1, "batch_size": 2,
                     "chunk_size": 2, "seed": 1,
                     "grid": {"scenario": ["ssp126"],
                              # a date, and a date of the 360-day calendar that noleap lacks
                              "day": ["2090-02-16", "2090-03-16"] if air else
                              {"values": [1, 2], "units": "months since 2090-01-16"}}},
        # the bound K of held-out masked fields (a density over the valid cells)
        "evaluation": {"max_points": 2, "bins": 5, "figures": False, "likelihood_fields": 1,
                       "log_likelihood": "none" if air else "bound"},
        "output": {"dir": str(root / "out"), "units": {var: "degC" if air else "degree_C"}},
        "cluster": {"kind": "local", "n_workers": 1, "threads_per_worker": 1,
                    "dashboard": False},
    }


def run_cli(root: Path, spec: dict, *extra: str) -> int:
    path = root / "pipeline.yaml"
    path.write_text(yaml.safe_dump(spec))
    return main(["run", str(path), *extra])


@pytest.fixture(scope="module", params=["climate-air", "climate-ocean"])
def finished(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    spec = pipeline(root, request.param)
    assert run_cli(root, spec) == 0
    return request.param, root, spec


def open_output(path: Path) -> xr.Dataset:
    return xr.open_dataset(path, decode_times=xr.coders.CFDatetimeCoder(use_cftime=True))


def test_output_dates_axes_metadata_and_units(finished):
    import cf_xarray  # noqa: F401

    kind, root, _ = finished
    air = kind == "climate-air"
    with open_output(root / "out" / "samples.nc") as ds:
        var = "tas" if air else "tos"
        # the time parameter decodes to the dates asked for, on the files' calendar
        date = cftime.Datetime360Day if air else cftime.DatetimeNoLeap
        assert list(ds["day"].values) == [date(2090, 2, 16), date(2090, 3, 16)]
        assert ds["day"].encoding["calendar"] == ("360_day" if air else "noleap")
        assert ds.cf.axes["T"] == ["day"]
        # axes and names from the coordinates' own metadata
        assert ds.cf["latitude"].name == ("latitude" if air else "nav_lat")
        assert ds.cf["longitude"].name == ("longitude" if air else "nav_lon")
        assert ds.cf["latitude"].attrs["standard_name"] == "latitude"
        assert ds.cf["latitude"].attrs["units"] == "degrees_north"
        if air:
            assert ds.cf.axes["X"] == ["longitude"] and ds.cf.axes["Y"] == ["latitude"]
            assert float(ds["height"]) == 1.5 and ds["height"].attrs["units"] == "m"
            assert ds[var].attrs["cell_methods"] == "day: mean"  # time: mean, renamed
            assert ds[var].attrs["grid_mapping"] == "latitude_longitude"
            assert ds["latitude_longitude"].attrs["grid_mapping_name"] == "latitude_longitude"
            assert ds["longitude"].values.max() > 180  # across the dateline, kept as given
        else:
            assert "X" not in ds.cf.axes  # index dims of a curvilinear grid are no lon axis
            assert ds["nav_lat"].dims == ("y", "x") and ds["nav_lon"].dims == ("y", "x")
            assert set(ds[var].encoding["coordinates"].split()) == {"nav_lat", "nav_lon"}
            land = land_mask(SIZE, SIZE)
            values = ds[var].values
            assert np.isnan(values[..., land]).all() and np.isfinite(values[..., ~land]).all()
        # output units as asked (trained in K); inside the declared physical bounds
        assert ds[var].attrs["units"] == ("degC" if air else "degree_C")
        valid = ds[var].values[np.isfinite(ds[var].values)]
        low, high = (180 - 273.15, 340 - 273.15) if air else (-1.9, 40.0)
        assert valid.min() >= low - 1e-3 and valid.max() <= high + 1e-3
        assert ds[var].attrs["standard_name"] == ("air_temperature" if air
                                                  else "sea_surface_temperature")


def test_output_cf_findings(finished):
    _, root, _ = finished
    high = cf_findings(root / "out" / "samples.nc", "high")
    medium = cf_findings(root / "out" / "samples.nc", "medium")
    assert high == []
    assert len(medium) == 1 and DIM_ORDER in medium[0], medium  # see DIM_ORDER


def test_evaluation_over_valid_cells_with_bounds(finished):
    kind, root, _ = finished
    summary = json.loads((root / "out" / "evaluation" / "summary.json").read_text())
    var = "tas" if kind == "climate-air" else "tos"
    assert summary["split"] == "held_out" and summary["points"]
    masked = int(land_mask(SIZE, SIZE).sum()) if kind == "climate-ocean" else 0
    if masked:
        assert summary["log_likelihood"]["method"] == "bound"
        assert all(np.isfinite(p["log_likelihood_bits_per_dim"]) for p in summary["points"])
    for point in summary["points"]:
        metrics = point["metrics"][var]
        assert metrics["n_masked_cells"] == masked
        assert metrics["n_valid_cells"] == SIZE * SIZE - masked
        assert metrics["n_generated_nonfinite"] == 0
        assert metrics["out_of_bounds_generated"] == 0.0  # by construction (Bounded)
        assert np.isfinite(metrics["wasserstein_1"])
        if masked:
            assert "spectrum_note" in metrics and "spectrum" not in metrics
    # the store's training points: a held-out point seen in training is labelled so
    store = root / "out" / "store"
    from rho_workflow.data.store import open_store

    with open_store(store) as s:
        trained = {(p["scenario"], p["day"]) for p in s.points("train")}
    for point in summary["points"]:
        p = point["point"]
        assert point["seen_in_training"] == ((p["scenario"], p["day"]) in trained)


def test_store_keeps_calendar_and_units(finished):
    kind, root, _ = finished
    with xr.open_dataset(root / "out" / "store", engine="zarr", decode_times=False) as ds:
        assert ds["day"].attrs["units"] == "days since 2090-01-01"
        assert ds["day"].attrs["calendar"] == ("360_day" if kind == "climate-air" else "noleap")
    with xr.open_dataset(root / "out" / "store", engine="zarr",
                         decode_times=xr.coders.CFDatetimeCoder(use_cftime=True)) as ds:
        assert ds["day"].values[0].month == 1 and ds["day"].values[0].day == 16


# --------------------------------------------------------------- the dry run stops early

@pytest.fixture(scope="module")
def air_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("air-files")
    write_sweep("climate-air", root / "sims", runs=2, realizations=MONTHS, size=SIZE)
    return root


def dry_run_error(root: Path, spec: dict, capsys) -> str:
    spec = copy.deepcopy(spec)
    spec.pop("simulate", None)
    assert run_cli(root, spec, "--dry-run") == 2
    return capsys.readouterr().err


def test_dry_run_rejects_years_since(air_files, capsys):
    spec = pipeline(air_files, "climate-air")
    spec["data"]["params"]["day"]["units"] = "years since 2090-01-01"
    err = dry_run_error(air_files, spec, capsys)
    assert "data.params.day" in err and "'years' has no fixed length" in err
    assert "fix: write e.g. 'days since 2090-01-01'" in err and "Traceback" not in err


def test_dry_run_rejects_inconvertible_output_units(air_files, capsys):
    spec = pipeline(air_files, "climate-air")
    spec["output"]["units"] = {"tas": "m s-1"}
    err = dry_run_error(air_files, spec, capsys)
    assert "output.units.tas: value 'm s-1' cannot hold 'tas', trained in 'K'" in err


def test_dry_run_reports_split_sizes_and_stops_on_empty_held_out(air_files, capsys):
    spec = pipeline(air_files, "climate-air")
    spec.pop("simulate")
    assert run_cli(air_files, spec, "--dry-run") == 0
    out = capsys.readouterr().out
    assert 'split: {"train": 6, "validation": 0, "held_out": 2}' in out  # 8 points, 25 %
    assert "samples: 8" in out
    spec["data"]["split"] = {"validation": 0.0, "held_out": 0.2, "by": "file"}  # 2 files
    err = dry_run_error(air_files, spec, capsys)
    assert "the 'held_out' split would hold 0 of the 8 samples" in err
    assert "data.split.by: params" in err


# --------------------------------------------------------------- units, calendars, grids

def time_space(calendar: str) -> ParamSpace:
    return ParamSpace([Parameter("day", "days since 2090-01-01", low=0, high=1000,
                                 calendar=calendar)])


def grid_days(spec, calendar: str) -> list:
    request = SweepRequest(grid={"day": spec}, members=1, batch_size=1, chunk_size=1)
    plan = plan_sweep(request, time_space(calendar))
    assert plan.calendars == {"day": calendar}
    return plan.axes["day"]


def test_time_grid_dates_and_calendar_offsets():
    assert grid_days(["2090-06-01", "2090-02-30"], "360_day") == [150.0, 59.0]
    assert grid_days(["2090-03-01"], "noleap") == [59.0]
    assert grid_days({"values": [5], "units": "months since 2090-01-01"}, "360_day") == [150.0]
    assert grid_days({"values": [0.5], "units": "years"}, "360_day") == [180.0]
    assert grid_days({"values": [1], "units": "years"}, "noleap") == [365.0]
    assert grid_days({"values": [2], "units": "months"}, "noleap") == [59.0]  # Jan + Feb
    assert grid_days({"start": 0, "stop": 2, "step": 1, "units": "weeks"}, "standard") == \
        [0.0, 7.0, 14.0]
    with pytest.raises(ConfigError, match="2090-02-30.*does not exist in the 'noleap'"):
        grid_days(["2090-02-30"], "noleap")
    with pytest.raises(ConfigError, match="no fixed length in the 'noleap' calendar"):
        grid_days({"values": [0.5], "units": "months"}, "noleap")
    with pytest.raises(CalendarError, match="not a time offset unit"):
        to_time_offsets([1], "kelvin", "days since 2090-01-01", "360_day", "sampling.grid.day")


def test_coarsening_averages_longitudes_on_the_circle(tmp_path):
    write_sweep("climate-ocean", tmp_path, runs=1, realizations=1, size=SIZE)
    cfg = DataConfig.from_dict({
        "files": str(tmp_path / "*.nc"), "variables": ["tos"], "spatial_dims": ["y", "x"],
        "units": {"tos": "degC"}, "missing": "fixed-mask", "coarsen": {"y": 2, "x": 2},
        "sample_dims": ["time_counter"]})
    fine = xr.open_dataset(next(tmp_path.glob("*.nc")))["nav_lon"].values
    plan = plan_ingest(cfg)
    coarse = plan.grid.aux["nav_lon"][1]
    assert plan.field_attrs["tos"]["cell_methods"] == "y: x: mean"  # time_counter: not kept
    blocks = fine.reshape(SIZE // 2, 2, SIZE // 2, 2).transpose(0, 2, 1, 3).reshape(
        SIZE // 2, SIZE // 2, 4)
    crossing = (blocks.max(-1) - blocks.min(-1)) > 180  # blocks across the dateline
    assert crossing.any()  # the test bites: an arithmetic mean would land near 0 there
    distance = np.abs((blocks - coarse[..., None] + 180) % 360 - 180)
    assert distance.max() < 5.0
    assert (coarse >= -180).all() and (coarse <= 180).all()


@pytest.mark.parametrize("low, high", [(-1.9, 40.0), (0.0, None), (None, 300.0)])
def test_bounded_transform_keeps_every_value_inside(low, high):
    t = Bounded(low, high, margin=1e-9)
    y = np.linspace(-30, 30, 121)
    x = t.inverse(y)
    assert (low is None or (x >= low).all()) and (high is None or (x <= high).all())
    inside = x[np.abs(y) < 15]
    np.testing.assert_allclose(t.forward(inside), y[np.abs(y) < 15], atol=1e-6)
    near = x[np.abs(y) < 4]  # away from the bounds, where central differences are exact
    h = 1e-7 * np.maximum(1.0, np.abs(near))
    numeric = (t.forward(near + h) - t.forward(near - h)) / (2 * h)
    np.testing.assert_allclose(np.exp(t.log_abs_derivative(near)), numeric, rtol=1e-5)


def test_masked_metrics_equal_the_metrics_of_the_valid_cells():
    rng = np.random.default_rng(0)
    gen, ref = rng.normal(size=(5, 6, 6)), rng.normal(1.0, 2.0, size=(7, 6, 6))
    land = np.zeros((6, 6), bool)
    land[:2, :3] = True
    masked = compare_fields(np.where(land, np.nan, gen), np.where(land, np.nan, ref))
    flat = compare_fields(gen[:, ~land][..., None], ref[:, ~land][..., None])
    for key in ("mean_error", "std_rel_error", "wasserstein_1", "variance_ratio"):
        assert masked[key] == pytest.approx(flat[key], rel=1e-12)
    assert masked["n_masked_cells"] == 6 and masked["n_valid_cells"] == 30


@pytest.mark.parametrize("section", ["## Climate data", "## Astro data"])
def test_readme_data_sections_validate(section):
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = text.split(section, 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    spec = yaml.safe_load(block)
    DataConfig.from_dict(spec["data"])  # raises ConfigError naming the key on a stale example
    if "output" in spec:
        from rho_workflow.config import _output_units_problems, OutputSection

        assert _output_units_problems(DataConfig.from_dict(spec["data"]),
                                      OutputSection(**spec["output"])) == []


def test_cell_methods_follow_the_time_parameter_and_keep_comments():
    from rho_workflow.data.ingest import _cell_methods

    assert _cell_methods("time: mean (interval: 1 month) area: mean where sea",
                         {"time": "day"}, {"day"}) == "day: mean (interval: 1 month) area: mean where sea"
    assert _cell_methods("lat: lon: mean time: maximum", {}, {"lat", "lon"}) == "lat: lon: mean"


def test_climate_pipeline_file_plans():
    from rho_workflow.pipeline import Pipeline

    path = Path(__file__).resolve().parents[1] / "pipelines" / "climate.yaml"
    plan = Pipeline.from_source(str(path)).plan()
    assert plan["stages"]["sample"]["samples"] == 2 * 3 * 4
    assert plan["config"]["output"]["units"] == {"tos": "degree_C"}
