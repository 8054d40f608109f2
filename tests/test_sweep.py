"""Sweep plans: units, Cartesian order, seeds, fixed micro-batches, chunks, errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from rho_workflow.diffusion.random import derive_seed
from rho_workflow.params import Parameter, ParamSpace
from rho_workflow.errors import ConfigError
from rho_workflow.workflow.sweep import SweepPlan, SweepRequest, plan_sweep

SPACE = ParamSpace([Parameter("index", "1", low=-3, high=-1),
                    Parameter("amplitude", "Mpc2", low=0.5, high=2.0)])


def sampling(**kw):
    base = dict(grid=None, table=None, table_units={}, members=3, seed=7, sampler="dpmpp_2m",
                steps=5, guidance=0.0, allow_extrapolation=False, batch_size=4, chunk_size=8)
    return SweepRequest(**{**base, **kw})


sampling_section = sampling


def test_grid_converts_units_and_orders_points_like_the_output():
    plan = plan_sweep(sampling(grid={"amplitude": {"values": [600000, 1500000], "units": "kpc2"},
                                     "index": {"start": -3, "stop": -1, "num": 3}}), SPACE)
    assert plan.names == ["index", "amplitude"]  # the model's order
    assert plan.axes["amplitude"] == pytest.approx([0.6, 1.5])
    assert plan.axes["index"] == [-3.0, -2.0, -1.0]
    assert plan.shape == (3, 2, 3)
    expected = [dict(index=i, amplitude=a) for i, a in itertools.product(plan.axes["index"],
                                                                         plan.axes["amplitude"])]
    assert plan.points == expected
    assert plan.n_samples == 18


def test_step_ranges_and_tables():
    plan = plan_sweep(sampling(grid={"index": {"start": -3, "stop": -1, "step": 0.5},
                                     "amplitude": [1.0]}), SPACE)
    assert plan.axes["index"] == [-3.0, -2.5, -2.0, -1.5, -1.0]
    table = plan_sweep(sampling(table=[{"index": -2.0, "amplitude": 1e6}, {"index": -1.5, "amplitude": 2e6}],
                                table_units={"amplitude": "kpc2"}), SPACE)
    assert table.layout == "table" and table.shape == (2, 3)
    assert [p["amplitude"] for p in table.points] == pytest.approx([1.0, 2.0])


def test_table_from_csv(tmp_path):
    f = tmp_path / "points.csv"
    f.write_text("index,amplitude\n-2.0,1.0\n-1.5,0.75\n")
    plan = plan_sweep(sampling(table=str(f)), SPACE)
    assert plan.points == [{"index": -2.0, "amplitude": 1.0}, {"index": -1.5, "amplitude": 0.75}]


def test_seeds_depend_on_point_and_member_only():
    plan = plan_sweep(sampling(grid={"index": [-2.0, -1.5], "amplitude": [1.0]}), SPACE)
    seeds = plan.seeds_of(0, plan.n_samples)
    assert seeds[4] == derive_seed(7, {"index": -1.5, "amplitude": 1.0}, 1)
    assert len(set(seeds)) == len(seeds)
    other = plan_sweep(sampling(grid={"index": [-2.0, -1.5], "amplitude": [1.0]}, chunk_size=4), SPACE)
    assert other.seeds_of(0, other.n_samples) == seeds


@pytest.mark.parametrize("chunk_size", [4, 8, 12, 40])
def test_chunks_cover_samples_with_whole_fixed_micro_batches(chunk_size):
    plan = plan_sweep(sampling(grid={"index": [-3.0, -2.5, -2.0, -1.5, -1.0], "amplitude": [1.0, 2.0]},
                               chunk_size=chunk_size), SPACE)
    covered, batches = [], []
    for c in plan.chunks:
        covered.extend(range(c.start, c.stop))
        batches.extend(plan.micro_batches(c.start, c.stop))
    assert covered == list(range(plan.n_samples))
    # the same global micro-batches whatever the chunk size
    assert batches == [(s, min(s + 4, plan.n_samples)) for s in range(0, plan.n_samples, 4)]


def test_plan_round_trips_as_plain_data():
    plan = plan_sweep(sampling(grid={"index": [-2.0], "amplitude": [1.0, 1.5]}), SPACE)
    again = SweepPlan.from_dict(plan.to_dict())
    assert again == plan
    assert "2 chunk" not in plan.describe() and "1 chunk task" in plan.describe()


def test_errors_name_the_key_path():
    with pytest.raises(ConfigError, match=r"sampling.grid: must give values for exactly .*missing \['amplitude'\]"):
        plan_sweep(sampling(grid={"index": [-2.0]}), SPACE)
    with pytest.raises(ConfigError, match=r"sampling.grid.amplitude: units 'K' cannot be converted"):
        plan_sweep(sampling(grid={"index": [-2.0], "amplitude": {"values": [1], "units": "K"}}), SPACE)
    with pytest.raises(ConfigError, match=r"sampling.grid: point 1: continuous parameter 'index': value -0.5"):
        plan_sweep(sampling(grid={"index": [-2.0, -0.5], "amplitude": [1.0]}), SPACE)
    plan = plan_sweep(sampling(grid={"index": [-2.0, -0.5], "amplitude": [1.0]},
                               allow_extrapolation=True), SPACE)
    assert plan.axes["index"] == [-2.0, -0.5]


# -- execution: bit-identical output whatever the chunking, workers, retries or resume -----

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from rho_workflow.api import RhoModel

    model = RhoModel.create((8, 8), SPACE, network={
        "kind": "unet", "dims": 2, "base_channels": 8, "channel_mults": [1, 2],
        "num_res_blocks": 1, "attention_levels": []}, device="cpu",
        metadata={"fields": [{"name": "density", "units": "1", "long_name": "density"}],
                  "spatial": {"dims": ["x", "y"], "coords": {
                      d: {"values": list(np.arange(8.0)), "units": "m"} for d in "xy"}}})
    rng = np.random.default_rng(0)
    fields = rng.normal(size=(16, 1, 8, 8)).astype(np.float32)
    points = [{"index": float(i), "amplitude": float(a)}
              for i, a in zip(rng.uniform(-3, -1, 16), rng.uniform(0.5, 2, 16))]
    model.fit_normalized(fields, points, steps=3, batch_size=4, progress=False, device="cpu")
    path = tmp_path_factory.mktemp("ckpt") / "model.ckpt"
    model.save(path)
    return path


def sweep_plan(chunk_size):
    return plan_sweep(sampling(grid={"index": [-2.5, -2.0, -1.5], "amplitude": [0.75, 1.5]},
                               members=3, batch_size=2, chunk_size=chunk_size, steps=3), SPACE)


def run(checkpoint, tmp_path, name, chunk_size, client=None, **kw):
    from rho_workflow.workflow.sampling import run_sweep

    out = tmp_path / f"{name}.nc"
    summary = run_sweep(sweep_plan(chunk_size), checkpoint, out, tmp_path / f"{name}-parts",
                        client=client, progress=False, dtype="float64", **kw)
    import xarray as xr

    with xr.open_dataset(out) as ds:
        return ds["density"].values, summary


def test_output_is_bit_identical_across_chunking_and_workers(tmp_path, checkpoint):
    from rho_workflow.workflow.cluster import LocalKind

    base, summary = run(checkpoint, tmp_path, "inprocess", 18)
    assert summary["chunks_run"] == 1
    with LocalKind(n_workers=1, dashboard=False).connect() as client:
        one, s1 = run(checkpoint, tmp_path, "one", 4, client)
    with LocalKind(n_workers=2, dashboard=False).connect() as client:
        two, s2 = run(checkpoint, tmp_path, "two", 2, client)
    assert s1["chunks_run"] == 5 and len(s2["workers"]) == 2
    assert np.array_equal(base, one) and np.array_equal(base, two)
    assert np.isfinite(base).all() and base.shape == (3, 2, 3, 8, 8)


def test_resume_skips_finished_chunks_and_regenerates_damaged_parts(tmp_path, checkpoint):
    import json

    full, _ = run(checkpoint, tmp_path, "full", 4)
    # an interrupted run: parts of chunks 0..2 written, then chunk 1 truncated on disk
    first, _ = run(checkpoint, tmp_path, "partial", 4, keep_parts=True)
    parts = tmp_path / "partial-parts"
    manifest = json.loads((parts / "manifest.json").read_text())
    for k in ("3", "4"):
        (parts / manifest["chunks"][k]["path"]).unlink()
    truncated = parts / manifest["chunks"]["1"]["path"]
    truncated.write_bytes(truncated.read_bytes()[:100])
    again, summary = run(checkpoint, tmp_path, "partial", 4, resume=True, keep_parts=True)
    assert summary["chunks_skipped"] == 2 and summary["chunks_run"] == 3
    assert np.array_equal(full, again)
    # a changed config (another seed) refuses to resume from the old parts
    from rho_workflow.workflow.manifest import ManifestMismatch
    from rho_workflow.workflow.sampling import run_sweep

    plan = sweep_plan(4)
    plan.seed = 99
    with pytest.raises(ManifestMismatch, match="another config or checkpoint"):
        run_sweep(plan, checkpoint, tmp_path / "x.nc", parts, resume=True, progress=False)


@pytest.mark.parametrize("chunk_size", [4, 8, 12, 40])
def test_chunk_work_expands_on_the_worker_to_the_plans_points_and_seeds(chunk_size):
    from rho_workflow.workflow.tasks import chunk_samples, chunk_work

    plan = plan_sweep(sampling(grid={"index": [-3.0, -2.5, -2.0, -1.5, -1.0], "amplitude": [1.0, 2.0]},
                               chunk_size=chunk_size), SPACE)
    for c in plan.chunks:
        work = chunk_work(plan, c)
        assert len(work["points"]) <= c.size // plan.members + 2  # each point once
        assert chunk_samples(work) == (plan.points_of(c.start, c.stop), plan.seeds_of(c.start, c.stop))
