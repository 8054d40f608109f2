"""Graph building is lazy: planning and building the preprocessing and sweep graphs compute
nothing (counted with a scheduler that refuses to run, as cf-xarray's tests do)."""

from __future__ import annotations

import dask
import numpy as np
import pytest

from laziness import raise_if_dask_computes
from rho_workflow.data.config import DataConfig
from rho_workflow.data.ingest import plan_ingest
from rho_workflow.data.make_data import write_sweep
from rho_workflow.data.store import preprocess_graph
from rho_workflow.params import Parameter, ParamSpace
from rho_workflow.workflow.output import sweep_template
from rho_workflow.workflow.sweep import plan_sweep
from test_sweep import sampling_section

LOGNORMAL = dict(variables=["density"], spatial_dims=["x", "y"], sample_dims=["realization"],
                 units="1", transform={"log": True, "floor": 1e-8},
                 params={"index": {"source": "variable_attribute"},
                         "amplitude": {"source": "variable_attribute", "units": "Mparsec2"}})


def test_the_helper_catches_a_compute():
    with pytest.raises(RuntimeError, match="too many dask computations"):
        with raise_if_dask_computes():
            dask.array.ones(4, chunks=2).sum().compute()


def test_preprocessing_graph_is_built_without_computing(tmp_path):
    write_sweep("lognormal-field", tmp_path, runs=4, seed=1, size=8, realizations=2)
    config = DataConfig.from_dict({**LOGNORMAL, "files": str(tmp_path / "*.nc")})
    with raise_if_dask_computes() as counter:
        plan = plan_ingest(config)
        graph = preprocess_graph(plan)
    assert counter.total_computes == 0
    assert graph.fields.shape == (8, 1, 8, 8) and len(graph.summaries) >= 1
    # and the graph computes what the files hold
    assert np.isfinite(graph.fields.compute(scheduler="sync")).all()


def test_sweep_plan_and_output_template_compute_nothing():
    space = ParamSpace([Parameter("index", "1", low=-3.0, high=-1.0)])
    section = sampling_section(grid={"index": {"start": -3.0, "stop": -1.0, "num": 5}})
    with raise_if_dask_computes() as counter:
        plan = plan_sweep(section, space)
        template = sweep_template(plan, {"fields": [{"name": "density", "units": "1"}],
                                         "spatial": {"dims": ["x"], "coords": {"x": {"values": [0.0, 1.0], "units": "m"}}}}, {})
    assert counter.total_computes == 0 and plan.n_samples == 5 * section.members
    assert template.sizes["index"] == 5
