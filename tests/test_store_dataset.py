"""make-data -> preprocess -> store -> dataset, on real netCDF files and real Dask clusters."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from rho_workflow.data.config import DataConfig
from rho_workflow.data.make_data import write_sweep
from rho_workflow.data.store import SPLITS, assign_split, open_store, preprocess
from rho_workflow.data.transforms import transform_from_dict

SH = dict(variables=["density"], spatial_dims=["x", "y", "z"], units="1",
          params={"l": {"source": "global_attribute", "kind": "categorical"},
                  "m": {"source": "global_attribute", "kind": "categorical"}})
LOGNORMAL = dict(variables=["density"], spatial_dims=["x", "y"], sample_dims=["realization"],
                 units="1", transform={"log": True, "floor": 1e-8},
                 params={"index": {"source": "variable_attribute"},
                         "amplitude": {"source": "variable_attribute", "units": "Mparsec2"}},
                 split={"validation": 0.2, "held_out": 0.2, "seed": 3})


@pytest.fixture(scope="module")
def lognormal_files(tmp_path_factory):
    out = tmp_path_factory.mktemp("lognormal")
    write_sweep("lognormal-field", out, runs=10, seed=4, size=8, realizations=3)
    return out


def _config(base, files, **extra):
    return DataConfig.from_dict({**base, "files": str(files / "*.nc"), **extra})


@pytest.mark.parametrize("suffix", ["zarr", "nc"])
def test_store_roundtrip_physical_units(lognormal_files, tmp_path, suffix):
    info = preprocess(_config(LOGNORMAL, lognormal_files), tmp_path / f"store.{suffix}",
                      progress=False)
    assert info.n_samples == 30 and info.shape == (8, 8)
    assert info.split_counts == {"train": 18, "validation": 6, "held_out": 6}
    store = open_store(info.path)
    # the store holds the files' values in canonical units, sample by sample
    raw = xr.open_mfdataset(sorted(lognormal_files.glob("*.nc")), combine="nested",
                            concat_dim="realization")
    expected = raw["density"].values.reshape(30, 1, 8, 8)
    np.testing.assert_allclose(store.fields().compute(), expected, rtol=1e-6)
    # normalized training data: log then standardization fitted on the training split
    x, points = store.to_numpy("train")
    assert x.dtype == np.float32 and x.shape == (18, 1, 8, 8)
    assert abs(x.mean()) < 1e-5 and abs(x.std() - 1) < 1e-4
    np.testing.assert_allclose(store.denormalize(x), expected[store.split_indices("train")],
                               rtol=1e-5)
    # realizations of a run share their parameter point and their split
    train_pts = {json.dumps(p, sort_keys=True) for p in points}
    held_pts = {json.dumps(p, sort_keys=True) for p in store.points("held_out")}
    assert len(train_pts) == 6 and len(held_pts) == 2 and not train_pts & held_pts
    assert store.param_space["amplitude"].units == "Mparsec2"
    assert store.dataset["amplitude"].attrs["units"] == "Mparsec2"
    assert store.coords["x"][1] == "Mparsec"
    assert store.field_attrs["density"]["units"] == "1"
    t = transform_from_dict(store.transform.to_dict())
    np.testing.assert_allclose(t.forward(expected), store.transform.forward(expected))
    assert store.provenance["n_files"] == 10
    assert DataConfig.from_dict(store.config) == _config(LOGNORMAL, lognormal_files)


def test_split_keeps_runs_together():
    points = [{"a": i // 3, "b": i // 15} for i in range(30)]
    files = [f"f{i // 3}" for i in range(30)]
    for by in ("file", "params"):
        split = assign_split(points, files, 0.2, 0.2, seed=0, by=by)
        for g in range(10):
            assert len(set(split[3 * g:3 * g + 3])) == 1
        assert [(split == i).sum() // 3 for i in range(3)] == [6, 2, 2]
    # by a parameter: b has two values; one is held out, the other trains
    split = assign_split(points, files, 0.0, 0.5, seed=1, by=["b"])
    assert sorted(set(split[:15])) + sorted(set(split[15:])) in ([0, 2], [2, 0])
    # never all runs out of training
    assert (assign_split(points[:3], files[:3], 0.4, 0.4, seed=0) == 0).all()
    assert set(SPLITS) == {"train", "validation", "held_out"}


@pytest.mark.filterwarnings("ignore:Port 8787 is already in use")
def test_preprocess_on_local_cluster(tmp_path):
    distributed = pytest.importorskip("distributed")
    write_sweep("spherical-harmonics", tmp_path / "sh", runs=6, seed=1, size=6)
    config = _config(SH, tmp_path / "sh", chunk_mb=0.002)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  protocol="tcp", host="127.0.0.1", dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        info = preprocess(config, tmp_path / "store.zarr", client=client, progress=False)
    local = preprocess(config, tmp_path / "local.zarr", progress=False)
    a, pa = open_store(info.path).to_numpy(None)
    b, pb = open_store(local.path).to_numpy(None)
    np.testing.assert_array_equal(a, b)
    assert pa == pb and {(p["l"], p["m"]) for p in pa} == {(0, 0), (1, -1), (1, 0), (1, 1),
                                                            (2, -2), (2, -1)}


def test_store_dataset_streams_every_sample_once(lognormal_files, tmp_path):
    torch = pytest.importorskip("torch")
    from rho_workflow.training.dataset import StoreDataset

    config = _config(LOGNORMAL, lognormal_files, chunk_mb=4 * 64 * 4 / 2 ** 20)  # 4 samples
    info = preprocess(config, tmp_path / "store.zarr", progress=False)
    store = open_store(info.path)
    expected, points = store.to_numpy("train")
    cond = store.param_space.to_array(points)
    ds = StoreDataset(store, "train", seed=1, buffer_blocks=2)
    assert ds.block_samples == 4 and len(ds) == len(expected)
    seen = [(x.numpy(), c.numpy()) for x, c in ds]
    assert len(seen) == len(expected)
    got = np.stack([x for x, _ in seen])
    # same multiset of samples, each with its own condition, in a shuffled order
    key = lambda a: np.round(a.reshape(len(a), -1)[:, :4], 4).tolist()  # noqa: E731
    assert sorted(key(got)) == sorted(key(expected))
    for x, c in seen:
        i = int(np.argmin(np.abs(expected - x).reshape(len(expected), -1).sum(1)))
        np.testing.assert_allclose(x, expected[i], rtol=1e-6)
        np.testing.assert_array_equal(c, cond[i])
    assert not np.array_equal(got, expected)
    ds.set_epoch(1)
    again = np.stack([x.numpy() for x, _ in ds])
    assert not np.array_equal(again, got)
    # DDP shards partition the blocks; a DataLoader with workers sees the same samples
    shards = [StoreDataset(store, "train", rank=r, world_size=2) for r in range(2)]
    assert sum(len(s) for s in shards) == len(expected)
    loader = torch.utils.data.DataLoader(StoreDataset(store, "train"), batch_size=5,
                                         num_workers=2)
    assert sum(len(x) for x, _ in loader) == len(expected)


def test_two_channels_with_their_own_units_and_transforms(tmp_path):
    from rho_workflow.data.netcdf import write_netcdf
    from rho_workflow.data.transforms import PerChannel

    rng = np.random.default_rng(0)
    truth = []
    for run in range(6):
        rho = rng.lognormal(0.0, 0.5, size=(4, 5))  # kg m-3
        temp = 280.0 + rng.normal(size=(4, 5))  # K
        truth.append(np.stack([rho, temp]))
        odd = run % 2 == 1
        ds = xr.Dataset(
            {"rho": (("y", "x"), rho / 1000.0 if odd else rho,
                     {"units": "g cm-3" if odd else "kg m-3"}),
             "T": (("y", "x"), temp - 273.15 if odd else temp,
                   {"units": "degC" if odd else "K", "standard_name": "sea_water_temperature"})},
            coords={"x": ("x", np.arange(5.0), {"units": "km"}),
                    "y": ("y", np.arange(4.0), {"units": "km"})},
            attrs={"pressure": f"{1000 + 10 * run} hPa"})  # a value written with its units
        write_netcdf(ds, tmp_path / f"run{run}.nc")
    config = DataConfig.from_dict({
        "files": str(tmp_path / "run*.nc"), "variables": ["rho", "T"], "spatial_dims": ["y", "x"],
        "units": {"rho": "kg m-3", "T": "K"}, "transform": {"log": ["rho"]},
        "params": {"pressure": {"source": "global_attribute", "units": "Pa"}},
        "split": {"validation": 0.0, "held_out": 0.0}})
    info = preprocess(config, tmp_path / "store.nc", progress=False)
    store = open_store(info.path)
    assert isinstance(store.transform, PerChannel)
    truth = np.stack(truth)
    np.testing.assert_allclose(store.fields().compute(), truth, rtol=1e-6)
    x, points = store.to_numpy("train")
    np.testing.assert_allclose(x.mean(axis=(0, 2, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(x.std(axis=(0, 2, 3)), 1.0, atol=1e-5)
    np.testing.assert_allclose(x[:, 0], (np.log(truth[:, 0]) - np.log(truth[:, 0]).mean())
                               / np.log(truth[:, 0]).std(), atol=1e-4)
    np.testing.assert_allclose(store.denormalize(x), truth, rtol=1e-5)
    assert [p["pressure"] for p in points] == pytest.approx([1e5 + 1e3 * r for r in range(6)])
    assert store.field_attrs["T"] == {"units": "K", "standard_name": "sea_water_temperature"}
    assert store.coords["x"][1] == "km" and store.mask is None
    meta = store.metadata()
    assert json.loads(json.dumps(meta))["variables"][1]["name"] == "T"




def test_the_store_reads_everything_but_the_fields_at_once(lognormal_files, tmp_path):
    """Parameters, splits and masks are read when the store opens, on this process's threads:
    read later inside a Dask task (a data-parallel rank after its rendezvous made the cluster
    dask's default), each read was a computation on the cluster, whose workers the ranks
    occupy -- the demo's two-rank training hung there."""
    info = preprocess(_config(LOGNORMAL, lognormal_files), tmp_path / "store.zarr", progress=False)
    store = open_store(info.path)
    lazy = {name for name, v in store.dataset.variables.items() if v.chunks is not None}
    assert lazy == set(store.variables) == {"density"}  # only the fields stay lazy
