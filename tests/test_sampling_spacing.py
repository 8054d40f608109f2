"""``sampling.spacing`` in a pipeline: the fitted noise levels reach the sweep's tasks, are part
of the fingerprint and the output's attributes, and a step count without fitted levels is
refused before any task with the fix."""

from __future__ import annotations

import numpy as np
import pytest

from rho_workflow.config import PipelineConfig
from rho_workflow.errors import ConfigError
from rho_workflow.params import Parameter, ParamSpace
from rho_workflow.workflow.sweep import SweepRequest, plan_sweep

SPACE = ParamSpace([Parameter("a", "1", low=0.0, high=1.0)])


def _plan(**kw):
    return plan_sweep(SweepRequest(grid={"a": [0.2, 0.8]}, members=2, **kw), SPACE, path="sampling")


def test_fitted_spacing_is_planned_and_fingerprinted():
    fitted = _plan(sampler="unipc", steps=10, spacing="fitted")
    plain = _plan(sampler="unipc", steps=10)
    assert fitted.spacing == "fitted" and plain.spacing is None
    assert fitted.to_dict()["spacing"] == "fitted"
    assert "spacing" not in plain.to_dict()        # old fingerprints unchanged
    assert "fitted levels" in fitted.describe()


def test_fitted_spacing_without_levels_is_refused():
    with pytest.raises(ConfigError) as info:
        _plan(sampler="dpmpp_3m", steps=40, spacing="fitted")
    text = str(info.value)
    assert "sampling.spacing" in text and "40" in text and "fix" in text


def test_config_accepts_known_spacings_only():
    base = {"name": "t", "data": {"files": "x/*.nc", "variables": ["v"], "spatial_dims": ["x"],
                                  "units": {"v": "K"},
                                  "params": {"p": {"source": "global_attribute"}}},
            "model": {}, "training": {}, "output": {"dir": "out"}}
    cfg = PipelineConfig.from_dict({**base, "sampling": {"grid": {"p": [1.0]}, "spacing": "fitted",
                                                         "sampler": "unipc", "steps": 10}})
    assert cfg.sampling.spacing == "fitted"
    with pytest.raises(ConfigError, match="sampling.spacing"):
        PipelineConfig.from_dict({**base, "sampling": {"grid": {"p": [1.0]}, "spacing": "cubic"}})


def test_sweep_with_fitted_levels_samples_those_levels(tmp_path):
    """In-process sweep (the accessor path): fitted and log-snr levels give different fields, and
    left out, the spacing is the fitted one where it is stored (unipc at 10 steps)."""
    from rho_workflow.api import RhoModel
    from rho_workflow.accessor import sample_sweep

    rng = np.random.default_rng(0)
    model = RhoModel.create((8,), SPACE, encoder="features")
    model.fit(rng.normal(size=(16, 8)), [{"a": float(v)} for v in rng.uniform(size=16)], steps=2,
              progress=False)
    a = sample_sweep(model, grid={"a": [0.2, 0.8]}, members=2, sampler="unipc", steps=10,
                     spacing="fitted")
    b = sample_sweep(model, grid={"a": [0.2, 0.8]}, members=2, sampler="unipc", steps=10)
    c = sample_sweep(model, grid={"a": [0.2, 0.8]}, members=2, sampler="unipc", steps=10, spacing="log-snr")
    var = list(a.data_vars)[0]
    assert a.attrs["rho_spacing"] == "fitted" and b.attrs["rho_spacing"] == "default (fitted)"
    np.testing.assert_array_equal(a[var].values, b[var].values)
    assert not np.allclose(a[var].values, c[var].values)
    d = sample_sweep(model, grid={"a": [0.2]}, members=1, sampler="unipc", steps=25)
    assert d.attrs["rho_spacing"] == "default (log-snr)"  # no fitted levels stored at 25 steps
