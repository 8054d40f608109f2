"""HDF5 and FITS sweeps through the same ``data:`` section (files written here, real h5py and
astropy), with astropy unit spellings read by the one unit registry."""

from __future__ import annotations

import numpy as np
import pytest

from rho_workflow.data.config import DataConfig
from rho_workflow.data.ingest import plan_ingest
from rho_workflow.data.store import open_store, preprocess
from rho_workflow.data.units import linear_conversion
from rho_workflow.data.validate import DataValidationError

h5py = pytest.importorskip("h5py")
fits = pytest.importorskip("astropy.io.fits")

N, SNAPS = 8, 2
MSUN_PER_MPC3_IN_KG_M3 = 1.98847e30 / (3.0856775814913673e22) ** 3


def density(omega_m: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (1e10 * omega_m * np.exp(0.3 * rng.standard_normal((SNAPS, N, N)))).astype(np.float32)


def write_camels_like(folder, runs=(0.2, 0.3, 0.4)):
    """CAMELS-like maps: /maps/density (snapshot, y, x) in Msun/Mpc3, the cosmology in the
    /Header group's attributes, the grid as 1D x/y datasets in Mpc."""
    for i, omega_m in enumerate(runs):
        with h5py.File(folder / f"camels_{i}.hdf5", "w") as f:
            f.attrs["code"] = "toy"
            header = f.create_group("Header")
            header.attrs["Omega0"] = omega_m
            header.attrs["BoxSize"] = 25.0
            maps = f.create_group("maps")
            d = maps.create_dataset("density", data=density(omega_m, i), chunks=(1, N, N))
            d.attrs["units"] = "Msun / Mpc3"
            centres = (np.arange(N) + 0.5) * 25.0 / N
            for dim in ("x", "y"):
                maps.create_dataset(dim, data=centres).attrs["units"] = "Mpc"


def write_fits_maps(folder, runs=(0.2, 0.3, 0.4)):
    """FITS cubes (snapshot, y, x): BUNIT in astropy units, the cosmology as header keywords
    with '[units]' comments, a linear WCS in Mpc."""
    for i, omega_m in enumerate(runs):
        hdu = fits.ImageHDU(density(omega_m, i), name="DENSITY")
        hdu.header["BUNIT"] = "solMass / Mpc3"
        for axis in (1, 2):
            hdu.header[f"CTYPE{axis}"] = "LINEAR"
            hdu.header[f"CRVAL{axis}"] = 25.0 / N / 2
            hdu.header[f"CDELT{axis}"] = 25.0 / N
            hdu.header[f"CRPIX{axis}"] = 1.0
            hdu.header[f"CUNIT{axis}"] = "Mpc"
        primary = fits.PrimaryHDU()
        primary.header["OMEGA_M"] = (omega_m, "[1] matter density parameter")
        primary.header["BOXSIZE"] = (25.0, "[Mpc] side of the box")
        fits.HDUList([primary, hdu]).writeto(folder / f"map_{i}.fits")


def config(files, variable, params, **extra):
    return DataConfig.from_dict({
        "files": files, "variables": [variable], "spatial_dims": ["y", "x"],
        "sample_dims": ["snapshot"], "units": {variable: "kg m-3"}, "params": params,
        # kg m-3 of cosmic densities are ~1e-27: a floor below them
        "transform": {"log": True, "floor": 1e-40},
        "split": {"validation": 0.0, "held_out": 0.0}, **extra})


def test_astropy_unit_spellings_share_the_registry():
    a, b = linear_conversion("solMass / Mpc3", "kg m-3")
    assert a == pytest.approx(MSUN_PER_MPC3_IN_KG_M3, rel=1e-9) and b == 0.0
    assert linear_conversion("km / s", "m s-1") == pytest.approx((1000.0, 0.0))
    assert linear_conversion("Msun", "solMass") == pytest.approx((1.0, 0.0))


def test_hdf5_maps_with_group_attributes(tmp_path):
    write_camels_like(tmp_path)
    cfg = config(str(tmp_path / "*.hdf5"), "density", {
        "omega_m": {"source": "global_attribute", "name": "Header/Omega0"},
        "box": {"source": "global_attribute", "name": "Header/BoxSize", "file_units": "Mpc",
                "units": "Mpc", "kind": "categorical"}})
    plan = plan_ingest(cfg)
    assert plan.n_samples == 3 * SNAPS and plan.grid.shape == (N, N)
    assert sorted({p["omega_m"] for p in plan.points}) == [0.2, 0.3, 0.4]
    np.testing.assert_allclose(plan.grid.coords["x"][0], (np.arange(N) + 0.5) * 25.0 / N)
    assert plan.grid.coords["x"][1] == "Mpc"
    store = open_store(preprocess(cfg, tmp_path / "store.nc", progress=False).path)
    got = store.fields().compute()[:, 0]
    expected = np.concatenate([density(om, i) for i, om in enumerate((0.2, 0.3, 0.4))])
    np.testing.assert_allclose(got, expected * MSUN_PER_MPC3_IN_KG_M3, rtol=1e-5)
    assert store.dataset["density"].attrs["units"] == "kg m-3"
    store.close()


def test_fits_images_with_header_keywords(tmp_path):
    write_fits_maps(tmp_path)
    cfg = config(str(tmp_path / "*.fits"), "DENSITY", {
        "omega_m": {"source": "global_attribute", "name": "OMEGA_M"},
        "box": {"source": "global_attribute", "name": "BOXSIZE", "units": "kpc",
                "kind": "continuous"}})
    plan = plan_ingest(cfg)
    assert plan.n_samples == 3 * SNAPS
    assert {p["box"] for p in plan.points} == {25000.0}  # '[Mpc]' comment -> kpc
    np.testing.assert_allclose(plan.grid.coords["x"][0], (np.arange(N) + 0.5) * 25.0 / N)
    store = open_store(preprocess(cfg, tmp_path / "store.nc", progress=False).path)
    got = store.fields().compute()[:, 0]
    expected = np.concatenate([density(om, i) for i, om in enumerate((0.2, 0.3, 0.4))])
    np.testing.assert_allclose(got, expected * MSUN_PER_MPC3_IN_KG_M3, rtol=1e-5)
    store.close()


def test_fits_without_units_is_rejected_with_the_fix(tmp_path):
    primary = fits.PrimaryHDU(np.ones((N, N), np.float32))
    primary.header["OMEGA_M"] = 0.3
    primary.writeto(tmp_path / "bare.fits")
    cfg = DataConfig.from_dict({"files": str(tmp_path / "bare.fits"), "variables": ["PRIMARY"],
                                "spatial_dims": ["y", "x"], "units": {"PRIMARY": "1"},
                                "params": {"omega_m": {"source": "global_attribute",
                                                       "name": "OMEGA_M"}}})
    with pytest.raises(DataValidationError, match="must have a 'units' attribute"):
        plan_ingest(cfg)


@pytest.mark.parametrize("fmt", ["hdf5", "fits"])
def test_astro_sweep_through_the_pipeline(tmp_path, fmt):
    """preprocess, train (tiny), sample and evaluate on HDF5 / FITS inputs (trained in
    Msun Mpc-3, as the files are; written in kg m-3)."""
    import xarray as xr
    from cf_check import cf_findings

    from rho_workflow.pipeline import run_pipeline

    runs = (0.2, 0.25, 0.3, 0.35)
    (write_camels_like if fmt == "hdf5" else write_fits_maps)(tmp_path, runs)
    variable = "density" if fmt == "hdf5" else "DENSITY"
    name = "Header/Omega0" if fmt == "hdf5" else "OMEGA_M"
    spec = {
        "name": f"astro-{fmt}",
        "data": {"files": str(tmp_path / ("*.hdf5" if fmt == "hdf5" else "*.fits")),
                 "variables": [variable], "spatial_dims": ["y", "x"],
                 "sample_dims": ["snapshot"], "units": {variable: "Msun Mpc-3"},
                 "params": {"omega_m": {"source": "global_attribute", "name": name}},
                 "transform": {"log": True},
                 "split": {"validation": 0.0, "held_out": 0.25, "seed": 0}},
        "model": {"network": {"kind": "unet", "dims": 2, "base_channels": 8,
                              "channel_mults": [1, 2], "num_res_blocks": 1,
                              "attention_levels": []}},
        "training": {"steps": 3, "batch_size": 4, "warmup_steps": 1, "log_every": 1,
                     "checkpoint_every": 3, "threads": 1},
        "sampling": {"sampler": "ddim", "steps": 2, "members": 2, "batch_size": 2,
                     "chunk_size": 2, "seed": 0, "grid": {"omega_m": [0.22, 0.33]}},
        "evaluation": {"max_points": 1, "training_points": 0, "figures": False, "log_likelihood": "none"},
        "output": {"dir": str(tmp_path / "out"), "units": {variable: "kg m-3"}},
        "cluster": {"kind": "local", "n_workers": 1, "threads_per_worker": 1,
                    "dashboard": False},
    }
    results = run_pipeline(spec, progress=False)
    assert results["preprocess"]["split_counts"]["held_out"] == 2  # one file, 2 snapshots
    with xr.open_dataset(tmp_path / "out" / "samples.nc") as ds:
        values = ds[variable].values
        assert ds[variable].attrs["units"] == "kg m-3"
        assert ds["x"].attrs["units"] in ("Mpc", "megaparsec")  # the UDUNITS spelling
        np.testing.assert_allclose(ds["x"].values, (np.arange(N) + 0.5) * 25.0 / N)
        # the inputs' order of magnitude (~3e9 Msun Mpc-3) in kg m-3
        median = np.median(values) / MSUN_PER_MPC3_IN_KG_M3
        assert np.isfinite(values).all() and 1e7 < median < 1e12
    assert cf_findings(tmp_path / "out" / "samples.nc", "high") == []
    assert results["evaluate"]["points"] == 1


def test_log_of_a_field_below_the_floor_is_rejected(tmp_path):
    """Cosmic densities in kg m-3 (~1e-27) are all below the default floor 1e-12."""
    write_camels_like(tmp_path)
    cfg = config(str(tmp_path / "*.hdf5"), "density", {
        "omega_m": {"source": "global_attribute", "name": "Header/Omega0"}},
        transform={"log": True})  # the default floor, 1e-12
    with pytest.raises(DataValidationError, match="must exceed transform.floor.*data.units.density"):
        preprocess(cfg, tmp_path / "store.nc", progress=False)
    low_floor = config(str(tmp_path / "*.hdf5"), "density", {
        "omega_m": {"source": "global_attribute", "name": "Header/Omega0"}},
        transform={"log": True, "floor": 1e-40})
    store = open_store(preprocess(low_floor, tmp_path / "ok.nc", progress=False).path)
    assert store.stats[0]["std"] > 0.1  # the field survives the log step
    store.close()
