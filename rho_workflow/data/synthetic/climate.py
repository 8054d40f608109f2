"""Climate-model-like sweeps: the file traits of real atmosphere and ocean model output.

Two kinds, one file per scenario run with ``realizations`` monthly time steps each; the
fields are smooth functions of latitude, season and the scenario's radiative forcing plus
weather noise (``numpy.random.default_rng([seed, run])``), so that a model can learn them:

``climate-air`` (a Met Office-like atmosphere file)
    ``tas(time, latitude, longitude)`` air temperature in ``K``; 360-day calendar; regular
    latitude/longitude axes with ``standard_name``/``axis`` whose longitudes cross the
    dateline (150 to 210 degrees_east); a scalar ``height`` coordinate of 1.5 m;
    ``cell_methods: "time: mean"``; a ``latitude_longitude`` grid-mapping variable.
``climate-ocean`` (an IPSL NEMO-like ocean file)
    ``tos(time_counter, y, x)`` sea surface temperature in ``degree_C``; ``noleap`` calendar;
    a curvilinear grid whose 2D ``nav_lat``/``nav_lon`` (longitudes in (-180, 180], wrapping
    at the dateline) are the only geographic coordinates; land cells are NaN (``_FillValue``).

Both store the scenario in the global attribute ``experiment_id`` and its forcing in
``radiative_forcing`` (units in ``radiative_forcing_units``), as CMIP-style files do.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import xarray as xr

__all__ = ["CLIMATE_KINDS", "SCENARIOS", "climate_dataset", "write_climate_sweep",
           "land_mask"]

CLIMATE_KINDS = ("climate-air", "climate-ocean")
#: scenario name -> radiative forcing in 2100 (W m-2), cycled over the runs
SCENARIOS = {"ssp126": 2.6, "ssp245": 4.5, "ssp370": 7.0, "ssp585": 8.5}
CALENDARS = {"climate-air": "360_day", "climate-ocean": "noleap"}
START_YEAR = 2090


def land_mask(ny: int, nx: int) -> np.ndarray:
    """True on land: a continent on the west edge and an island (fixed for every run)."""
    j, i = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    coast = i < max(1, nx // 6) + (j * 3) // max(ny, 1)
    island = (j - ny // 2) ** 2 + (i - 2 * nx // 3) ** 2 <= max(1, (nx // 8) ** 2)
    return coast | island


def _curvilinear(ny: int, nx: int) -> tuple[np.ndarray, np.ndarray]:
    """2D latitude and longitude of a tilted grid crossing the dateline (lon in (-180, 180])."""
    j, i = np.meshgrid(np.arange(ny, dtype=np.float64), np.arange(nx, dtype=np.float64),
                       indexing="ij")
    lat = -30.0 + 60.0 * j / max(ny - 1, 1) + 1.5 * np.sin(np.pi * i / max(nx - 1, 1))
    lon = 150.0 + 60.0 * i / max(nx - 1, 1) + 4.0 * (j / max(ny - 1, 1) - 0.5)
    return lat, (lon + 180.0) % 360.0 - 180.0


def _temperature_k(lat: np.ndarray, months: np.ndarray, forcing: float,
                   rng: np.random.Generator) -> np.ndarray:
    """Near-surface temperature (K): latitude gradient, seasonal cycle, warming and noise."""
    season = np.cos(2 * np.pi * (months[:, None, None] - 7) / 12.0) * np.sin(np.deg2rad(lat))[None]
    base = 300.0 - 35.0 * np.sin(np.deg2rad(lat)) ** 2
    noise = rng.standard_normal((len(months),) + lat.shape)
    # smooth the noise over neighbouring cells (weather has spatial scales)
    noise = (noise + np.roll(noise, 1, -1) + np.roll(noise, 1, -2) + np.roll(noise, -1, -1)) / 2.0
    return base[None] + 6.0 * season + 0.6 * forcing + 0.4 * noise


def climate_dataset(kind: str, run: int, *, seed: int = 0, size: int = 16,
                    months: int = 4) -> xr.Dataset:
    """One scenario run of ``kind`` (see the module docstring), ``size`` cells a side."""
    if kind not in CLIMATE_KINDS:
        raise ValueError(f"kind {kind!r} is not one of {CLIMATE_KINDS}")
    scenario = list(SCENARIOS)[run % len(SCENARIOS)]
    forcing = SCENARIOS[scenario]
    rng = np.random.default_rng([seed, run])
    calendar = CALENDARS[kind]
    time = xr.date_range(f"{START_YEAR}-01-01", periods=months, freq="MS", calendar=calendar,
                         use_cftime=True) + datetime.timedelta(days=15)  # mid-month
    month_numbers = np.array([t.month for t in time], dtype=np.float64)
    attrs = {"Conventions": "CF-1.8", "rho_field_variable": "tas" if kind == "climate-air" else "tos",
             "experiment_id": scenario,
             "radiative_forcing": forcing, "radiative_forcing_units": "W m-2",
             "realization_index": run}
    if kind == "climate-air":
        lat = np.linspace(40.0, 70.0, size)
        lon = np.linspace(150.0, 210.0, size)  # crosses the dateline (0-360 convention)
        lat2d = np.broadcast_to(lat[:, None], (size, size))
        tas = _temperature_k(lat2d, month_numbers, forcing, rng).astype(np.float32)
        return xr.Dataset(
            {"tas": (("time", "latitude", "longitude"), tas, {
                "standard_name": "air_temperature", "long_name": "Near-Surface Air Temperature",
                "units": "K", "cell_methods": "time: mean", "grid_mapping": "latitude_longitude"}),
             "latitude_longitude": ((), np.int32(0), {
                 "grid_mapping_name": "latitude_longitude", "earth_radius": 6371229.0,
                 "longitude_of_prime_meridian": 0.0})},
            coords={
                "time": ("time", time, {"standard_name": "time", "axis": "T"}),
                "latitude": ("latitude", lat, {"standard_name": "latitude", "axis": "Y",
                                               "units": "degrees_north"}),
                "longitude": ("longitude", lon, {"standard_name": "longitude", "axis": "X",
                                                 "units": "degrees_east"}),
                "height": ((), 1.5, {"standard_name": "height", "long_name": "height",
                                     "units": "m", "positive": "up", "axis": "Z"}),
            },
            attrs={**attrs, "source": "synthetic Met Office-like atmosphere run",
                   "institution": "rho_workflow make-data"})
    lat, lon = _curvilinear(size, size)
    sst = _temperature_k(lat, month_numbers, forcing, rng) - 273.15
    sst = np.where(land_mask(size, size)[None], np.nan, sst).astype(np.float32)
    return xr.Dataset(
        {"tos": (("time_counter", "y", "x"), sst, {
            "standard_name": "sea_surface_temperature", "long_name": "Sea Surface Temperature",
            "units": "degree_C", "cell_methods": "time_counter: mean",
            "coordinates": "nav_lat nav_lon"})},
        coords={
            "time_counter": ("time_counter", time, {"standard_name": "time", "axis": "T",
                                                    "long_name": "Time axis"}),
            "nav_lat": (("y", "x"), lat, {"standard_name": "latitude", "units": "degrees_north",
                                          "long_name": "Latitude"}),
            "nav_lon": (("y", "x"), lon, {"standard_name": "longitude", "units": "degrees_east",
                                          "long_name": "Longitude"}),
        },
        attrs={**attrs, "source": "synthetic IPSL NEMO-like ocean run",
               "institution": "rho_workflow make-data"})


def write_climate_sweep(kind: str, out_dir: str | Path, *, runs: int, seed: int = 0,
                        size: int = 16, months: int = 4, history: str = "") -> list[Path]:
    """Write ``runs`` scenario runs of ``kind`` (``months`` time steps each) as netCDF."""
    from rho_workflow.data.netcdf import write_netcdf

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for run in range(runs):
        ds = climate_dataset(kind, run, seed=seed, size=size, months=months)
        var = "tas" if kind == "climate-air" else "tos"
        time_name = "time" if kind == "climate-air" else "time_counter"
        encoding = {var: {"_FillValue": np.float32(1e20), "zlib": True},
                    time_name: {"units": f"days since {START_YEAR}-01-01 00:00:00", "dtype": "float64",
                                "calendar": CALENDARS[kind], "_FillValue": None}}
        for name in ds.coords:
            if name != time_name:
                encoding[name] = {"_FillValue": None}
        scenario = ds.attrs["experiment_id"]
        paths.append(write_netcdf(ds, out_dir / f"{var}_{scenario}_r{run + 1}i1p1f1.nc",
                                  encoding=encoding, history=history or f"make-data {kind}"))
    return paths
