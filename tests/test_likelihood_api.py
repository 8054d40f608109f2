"""Probabilities through the API: log_prob in data units, per-step diagnostics over t."""

from __future__ import annotations

import numpy as np
import pytest

from rho_workflow.api import RhoModel
from rho_workflow.errors import RhoWorkflowError
from rho_workflow.params import Parameter, ParamSpace

NET = {"kind": "unet", "dims": 1, "base_channels": 8, "channel_mults": [1], "num_res_blocks": 1,
       "attention_levels": []}


@pytest.fixture(scope="module")
def model():
    rng = np.random.default_rng(0)
    space = ParamSpace([Parameter("a", "1", low=0.0, high=1.0)])
    a = rng.uniform(0, 1, 32)
    fields = np.exp(a[:, None] + 0.3 * rng.standard_normal((32, 8)))
    m = RhoModel.create((8,), space, network=NET, T=50, device="cpu")
    m.fit(fields, [{"a": float(v)} for v in a], transform="log-standardize", steps=20,
          batch_size=16, progress=False)
    return m, fields[:3], [{"a": float(v)} for v in a[:3]]


def test_log_prob_units_are_consistent(model):
    m, x, pts = model
    nats = m.log_prob(x, pts, method="bound", unit="nats")
    bits = m.log_prob(x, pts, method="bound", unit="bits")
    bpd = m.log_prob(x, pts, method="bound", unit="bits_per_dim")
    np.testing.assert_allclose(bits, nats / np.log(2))
    np.testing.assert_allclose(bpd, bits / 8)


def test_log_prob_includes_the_log_jacobian_of_the_transform(model):
    """Density of x itself: log p_x(x) = log p_z(T(x)) + sum log|T'(x)|, T = standardized log."""
    m, x, pts = model
    r = m.log_prob(x, pts, method="bound", details=True)
    scale = float(np.asarray(m.transform.to_dict()["steps"][1]["scale"]).ravel()[0])
    expected = (-np.log(x) - np.log(scale)).sum(axis=1)  # dy/dx = 1 / (x scale)
    np.testing.assert_allclose(r.log_jacobian, expected, rtol=1e-10)


def test_log_prob_of_negative_values_under_log_is_refused(model):
    m, x, pts = model
    with pytest.raises(RhoWorkflowError, match="log"):
        m.log_prob(-x, pts, method="bound")


def test_diagnostics_over_t(model, tmp_path):
    from rho_workflow.evaluate.diagnostics import plot_diagnostics

    m, x, pts = model
    ds = m.diagnostics(x, pts)
    assert ds.sizes["t"] == 50 and list(ds["t"].values[:2]) == [1, 2]
    ok = np.isfinite(ds["reverse_entropy_lower"].values)
    assert (ds["reverse_entropy_lower"].values[ok] <= ds["reverse_entropy_upper"].values[ok]).all()
    # H_q(X^t|X^0) = 1/2 log(2 pi e (1 - alpha_bar_t)) grows along the forward chain
    assert (np.diff(ds["entropy_given_x0"].values) > 0).all()
    kl = ds["kl_per_step"].values
    assert np.isnan(kl[0]) and (kl[1:] >= 0).all() and np.isfinite(kl[1:]).all()
    assert plot_diagnostics(ds, tmp_path / "d.png").stat().st_size > 1000
