"""Ingest of real-world file shapes through configuration alone.

The files here are written like climate/ocean model output: CF-1.7 ``tos`` (sea surface
temperature) on a curvilinear grid with 2D ``lat``/``lon`` and their bounds, a grid-mapping
variable, packed int16 data with ``scale_factor``/``add_offset`` and ``_FillValue``, a fixed
land mask, non-standard calendars (``360_day``, ``noleap``), the scenario in a variable
attribute, the forcing in a global attribute, the ensemble member in the file name, and
some files in degC, others in K.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from cf_check import cf_high_priority

from rho_workflow.data.config import DataConfig
from rho_workflow.data.ingest import build_fields, plan_ingest
from rho_workflow.data.make_data import write_sweep
from rho_workflow.data.netcdf import write_netcdf
from rho_workflow.data.store import open_store, preprocess
from rho_workflow.data.validate import DataValidationError

NY, NX, NT = 6, 8, 3


def land_mask() -> np.ndarray:
    land = np.zeros((NY, NX), dtype=bool)
    land[:2, :3] = True
    land[4:, 6:] = True
    return land


def ocean_dataset(member: int, scenario: str, forcing: float, calendar: str, units: str,
                  start_year: int, extra_nan: bool = False) -> xr.Dataset:
    """One run of a toy ocean model: ``tos(time, y, x)`` with everything real files carry."""
    rng = np.random.default_rng(member)
    j, i = np.meshgrid(np.arange(NY), np.arange(NX), indexing="ij")
    lat = -30.0 + 10.0 * j + 0.5 * i
    lon = 100.0 + 12.0 * i + 0.3 * j
    kelvin = 290.0 + 0.5 * forcing + 2.0 * np.cos(np.deg2rad(lat))[None] \
        + 0.3 * rng.standard_normal((NT, NY, NX))
    values = kelvin - 273.15 if units == "degC" else kelvin
    values = np.where(land_mask()[None], np.nan, values)
    if extra_nan:
        values[1, 3, 3] = np.nan
    time = xr.date_range(f"{start_year}-01-16", periods=NT, freq="MS", calendar=calendar,
                         use_cftime=True)
    ds = xr.Dataset(
        {
            "tos": (("time", "y", "x"), values.astype(np.float32), {
                "standard_name": "sea_surface_temperature", "long_name": "Sea Surface Temperature",
                "units": units, "grid_mapping": "crs", "coordinates": "lat lon",
                "experiment_id": scenario, "cell_methods": "time: mean"}),
            "crs": ((), np.int32(0), {"grid_mapping_name": "rotated_latitude_longitude",
                                       "grid_north_pole_latitude": 39.25,
                                       "grid_north_pole_longitude": -162.0}),
            "lat_bnds": (("y", "x", "nv"), np.repeat(lat[..., None], 4, axis=-1) + [-5, -5, 5, 5]),
            "lon_bnds": (("y", "x", "nv"), np.repeat(lon[..., None], 4, axis=-1) + [-6, 6, 6, -6]),
            "time_bnds": (("time", "bnds"), np.stack([time, time], axis=1)),
        },
        coords={
            "time": ("time", time, {"standard_name": "time", "bounds": "time_bnds"}),
            "lat": (("y", "x"), lat, {"standard_name": "latitude", "units": "degrees_north",
                                      "bounds": "lat_bnds"}),
            "lon": (("y", "x"), lon, {"standard_name": "longitude", "units": "degrees_east",
                                      "bounds": "lon_bnds"}),
            # rotated-pole grid coordinates, as the grid mapping "crs" requires (CF 5.6)
            "y": ("y", np.arange(NY, dtype=np.float64), {"units": "degrees", "axis": "Y",
                                                          "standard_name": "grid_latitude"}),
            "x": ("x", np.arange(NX, dtype=np.float64), {"units": "degrees", "axis": "X",
                                                          "standard_name": "grid_longitude"}),
        },
        attrs={"Conventions": "CF-1.7", "source": "toy ocean model", "radiative_forcing": forcing,
               "radiative_forcing_units": "W m-2"},
    )
    return ds


def write_ocean_run(folder, member: int, **kw) -> None:
    ds = ocean_dataset(member, **kw)
    calendar = kw["calendar"]
    encoding = {
        "tos": {"dtype": "int16", "scale_factor": 0.01, "add_offset": 15.0 if kw["units"] == "degC"
                else 288.0, "_FillValue": np.int16(-32767)},
        "time": {"units": "days since 1850-01-01", "calendar": calendar},
        "time_bnds": {"units": "days since 1850-01-01", "calendar": calendar},
    }
    write_netcdf(ds, folder / f"tos_Omon_toy_{kw['scenario']}_r{member}i1p1f1.nc", encoding=encoding)


RUNS = [(1, "ssp245", 2.5, "360_day", "degC", 2015), (2, "ssp585", 5.0, "noleap", "K", 2015),
        (3, "ssp245", 2.5, "360_day", "K", 2050), (4, "ssp585", 5.0, "noleap", "degC", 2050)]


DAY = {"source": "time", "units": "days since 2000-01-01"}


def ocean_config(folder, time: bool = False, **extra) -> DataConfig:
    """The toy ocean sweep's data section; ``time``: with the day parameter (the files of
    one calendar only: a time parameter has one calendar)."""
    params = {"day": DAY} if time else {}
    return DataConfig.from_dict({
        "files": str(folder / "tos_*.nc"), "variables": ["tos"], "spatial_dims": ["y", "x"],
        "sample_dims": ["time"], "units": {"tos": "K"}, "missing": "fixed-mask",
        "params": {
            "scenario": {"source": "variable_attribute", "name": "experiment_id",
                         "kind": "categorical"},
            "forcing": {"source": "global_attribute", "name": "radiative_forcing",
                        "units": "W m-2"},
            "member": {"source": "filename", "pattern": r"_r(?P<value>\d+)i1p1f1\.nc$",
                       "kind": "categorical"},
            **params,
        },
        "split": {"validation": 0.0, "held_out": 0.0}, **extra})


@pytest.fixture(scope="module")
def ocean_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ocean")
    for member, scenario, forcing, calendar, units, year in RUNS:
        write_ocean_run(folder, member, scenario=scenario, forcing=forcing, calendar=calendar,
                        units=units, start_year=year)
    return folder


def test_climate_files_plan(ocean_files):
    plan = plan_ingest(ocean_config(ocean_files))
    assert plan.n_samples == 4 * NT and plan.grid.shape == (NY, NX)
    assert set(plan.grid.aux) == {"lat", "lon"}  # 2D curvilinear coordinates are kept
    assert plan.grid.aux["lat"][2]["standard_name"] == "latitude"
    assert "bounds" not in plan.grid.aux["lat"][2]  # lat_bnds does not travel
    assert plan.grid.grid_mapping == {"crs": {"grid_mapping_name": "rotated_latitude_longitude",
                                              "grid_north_pole_latitude": 39.25,
                                              "grid_north_pole_longitude": -162.0}}
    assert plan.field_attrs["tos"]["grid_mapping"] == "crs"
    assert "cell_methods" not in plan.field_attrs["tos"]  # "time: mean" over a sample dim
    points = plan.points
    assert {p["scenario"] for p in points} == {"ssp245", "ssp585"}
    assert {p["forcing"] for p in points} == {2.5, 5.0}
    assert {p["member"] for p in points} == {1.0, 2.0, 3.0, 4.0}
    assert plan.param_kinds == {"scenario": "categorical", "forcing": "continuous",
                                "member": "categorical"}
    # time -> number: 360_day months are 30 days, noleap months follow the real lengths
    days = {}
    for calendar, m in (("360_day", 1.0), ("noleap", 2.0)):
        files = [str(ocean_files / f"tos_Omon_toy_{s}_r{r}i1p1f1.nc")
                 for r, s, _, c, _, _ in RUNS if c == calendar]
        one = plan_ingest(ocean_config(ocean_files, time=True, files=files))
        assert one.param_calendars == {"day": calendar} and one.param_kinds["day"] == "continuous"
        days[m] = [p["day"] for p in one.points if p["member"] == m]
    assert np.diff(days[1.0]).tolist() == [30.0, 30.0]
    assert np.diff(days[2.0]).tolist() == [28.0, 31.0]  # Feb, Mar, Apr 2015
    assert days[1.0][0] == 15 * 360 + 30  # 2015-02-01 in a 360-day calendar
    # one number line cannot hold day counts of two calendars: rejected, with the fix
    with pytest.raises(DataValidationError, match="must be on one calendar.*declare data.params.day.calendar"):
        plan_ingest(ocean_config(ocean_files, time=True))


def test_climate_files_units_packing_and_mask(ocean_files, tmp_path):
    info = preprocess(ocean_config(ocean_files), tmp_path / "ocean.zarr", progress=False)
    store = open_store(info.path)
    expected = []
    for member, scenario, forcing, calendar, units, year in RUNS:
        ds = ocean_dataset(member, scenario=scenario, forcing=forcing, calendar=calendar,
                           units=units, start_year=year)
        k = ds["tos"].values + (273.15 if units == "degC" else 0.0)
        expected.append((f"r{member}i", k))
    expected = np.concatenate([k for _, k in sorted(expected, key=lambda e: _order(e[0]))])
    expected = expected[:, None]
    got = store.fields().compute()
    np.testing.assert_allclose(got, expected, atol=0.006, equal_nan=True)  # packing: 0.01 K
    assert store.dataset["tos"].attrs["units"] == "K"
    assert store.field_attrs["tos"]["standard_name"] == "sea_surface_temperature"
    np.testing.assert_array_equal(store.mask, ~land_mask())
    np.testing.assert_array_equal(store.channel_mask, ~land_mask()[None])
    x, points = store.to_numpy("train")
    assert np.isfinite(x).all() and (x[:, 0][:, land_mask()] == 0).all()
    restored = store.denormalize(x)
    assert np.isnan(restored[:, 0][:, land_mask()]).all()
    np.testing.assert_allclose(restored, expected, atol=0.006, equal_nan=True)
    assert store.dataset["lat"].dims == ("y", "x")
    assert store.dataset["lat"].attrs["units"] == "degrees_north"
    assert store.param_space["forcing"].units == "W m-2"
    assert store.param_space["scenario"].values == ("ssp245", "ssp585")
    assert {p["scenario"] for p in points} == {"ssp245", "ssp585"}
    plan_points = plan_ingest(ocean_config(ocean_files)).points
    assert points == plan_points
    assert store.param_space.to_array(points).shape == (4 * NT, 3)


def _order(member_tag: str) -> int:
    """Position of a member's file in the sorted file list (scenario, then member)."""
    names = sorted(f"{sc}_r{m}i" for m, sc, *_ in RUNS)
    return next(i for i, n in enumerate(names) if n.endswith(member_tag))


def test_missing_values_changing_between_runs(ocean_files, tmp_path):
    folder = tmp_path / "files"
    folder.mkdir()
    for path in ocean_files.glob("*.nc"):
        (folder / path.name).write_bytes(path.read_bytes())
    write_ocean_run(folder, 5, scenario="ssp126", forcing=1.0, calendar="noleap", units="K",
                    start_year=2015, extra_nan=True)
    with pytest.raises(DataValidationError) as err:
        preprocess(ocean_config(folder), tmp_path / "bad.zarr", progress=False)
    message = str(err.value)
    assert "tos_Omon_toy_ssp126_r5i1p1f1.nc" in message and "time=1" in message
    assert "fixed-mask" in message and not (tmp_path / "bad.zarr").exists()
    info = preprocess(ocean_config(folder, missing="fill", fill_value=271.35),
                      tmp_path / "filled.nc", progress=False)
    filled = open_store(info.path).fields().compute()
    assert np.isfinite(filled).all() and filled.min() == pytest.approx(271.35)


def test_select_crop_coarsen(ocean_files):
    config = ocean_config(ocean_files, crop={"x": [0, 6]}, coarsen={"y": 2, "x": 2},
                          select={"time": {"start": None, "stop": None}})
    plan = plan_ingest(config)
    assert plan.grid.shape == (NY // 2, 3)
    np.testing.assert_allclose(plan.grid.coords["x"][0], [0.5, 2.5, 4.5])
    fields = build_fields(plan).compute()
    assert fields.shape == (4 * NT, 1, NY // 2, 3)


def test_sweep_with_mixed_units_is_converted(tmp_path):
    write_sweep("spectral-lines", tmp_path, runs=6, seed=2, size=16, runs_per_file=2,
                vary_units=True)
    config = DataConfig.from_dict({
        "files": str(tmp_path / "*.nc"), "variables": ["line_profile"],
        "spatial_dims": ["wavenumber"], "sample_dims": ["run"], "units": "cm",
        "params": {"temperature": {"source": "coordinate", "units": "K"},
                   "pressure": {"source": "coordinate", "units": "hPa"}}})
    plan = plan_ingest(config)
    assert plan.files[1].conversions["line_profile"] == (100.0, 0.0)  # m -> cm
    fields = build_fields(plan).compute()
    # every field is a unit-area line profile in cm over the wavenumber grid (cm-1)
    dnu = np.diff(plan.grid.coords["wavenumber"][0])[0]
    assert plan.grid.coords["wavenumber"][1] == "cm-1"
    area = fields[:, 0].sum(axis=1) * dnu
    assert np.all(area > 0.5) and np.ptp(area) < 0.5
    pressures = sorted(p["pressure"] for p in plan.points)
    assert 10.0 <= pressures[0] and pressures[-1] <= 1000.0  # Pa files converted to hPa


def test_planning_and_graph_building_read_no_field_values(tmp_path):
    """A 640 MB field never written to disk (netCDF fills it on read): planning and building
    the graph must touch metadata only -- no Dask task runs, memory does not grow."""
    import netCDF4
    import psutil
    from dask.callbacks import Callback

    path = tmp_path / "huge.nc"
    with netCDF4.Dataset(path, "w") as nc:
        nc.Conventions = "CF-1.8"
        nc.createDimension("run", 40)
        nc.createDimension("y", 2048)
        nc.createDimension("x", 2048)
        var = nc.createVariable("rho", "f4", ("run", "y", "x"), chunksizes=(1, 256, 256),
                                fill_value=np.float32(1.0))
        var.units = "kg m-3"
        run = nc.createVariable("T", "f8", ("run",))
        run.units = "K"
        run[:] = np.linspace(200, 300, 40)
    assert path.stat().st_size < 2 ** 20
    config = DataConfig.from_dict({"files": [str(path)], "variables": ["rho"],
                                   "spatial_dims": ["y", "x"], "sample_dims": ["run"],
                                   "units": "g cm-3", "params": {"T": {"source": "coordinate",
                                                                      "units": "degC"}}})
    executed = []

    class Count(Callback):
        def _posttask(self, key, result, dsk, state, worker_id):
            executed.append(key)

    rss = psutil.Process().memory_info().rss
    with Count():
        plan = plan_ingest(config)
        fields = build_fields(plan)
    assert executed == []
    assert psutil.Process().memory_info().rss - rss < 200 * 2 ** 20
    assert fields.shape == (40, 1, 2048, 2048) and fields.nbytes == 40 * 2 ** 24
    assert fields.chunksize[0] == 4  # 64 MB chunks of whole fields
    assert plan.points[0]["T"] == pytest.approx(200 - 273.15)
    assert plan.files[0].conversions["rho"] == pytest.approx((1e-3, 0.0))  # kg m-3 -> g cm-3
    assert np.isnan(fields[:1, :, :2, :2].compute()).all()  # never written: the fill value


def test_netcdf_store_passes_the_ioos_cf_checker(ocean_files, tmp_path):
    info = preprocess(ocean_config(ocean_files), tmp_path / "store.nc", progress=False)
    high = cf_high_priority(info.path)
    assert high == [], high
