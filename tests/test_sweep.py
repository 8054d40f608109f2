"""Sweep plans: units, Cartesian order, seeds, fixed micro-batches, chunks, errors."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pytest

from rho_workflow.diffusion.random import derive_seed
from rho_workflow.params import Parameter, ParamSpace
from rho_workflow.workflow.schema import ConfigError
from rho_workflow.workflow.sweep import SweepPlan, plan_sweep

SPACE = ParamSpace([Parameter("index", "1", low=-3, high=-1),
                    Parameter("amplitude", "Mpc2", low=0.5, high=2.0)])


def sampling(**kw):
    base = dict(grid=None, table=None, table_units={}, members=3, seed=7, sampler="dpmpp_2m",
                steps=5, guidance=0.0, allow_extrapolation=False, batch_size=4, chunk_size=8)
    return SimpleNamespace(**{**base, **kw})


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
