"""Densities in data units: the transforms' log-Jacobians and the model-level log_prob (issue 9)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gaussian import GaussianData
from rho_workflow.data.transforms import Affine, Chain, Identity, Log, MinMax, PerChannel
from rho_workflow.diffusion.schedules import make_schedule
from rho_workflow.errors import RhoWorkflowError
from rho_workflow.params import Parameter, ParamSpace
from rho_workflow.training.likelihood import field_log_prob

TRANSFORMS = {
    "identity": Identity(),
    "log": Log(floor=1e-9),
    "affine": Affine(shift=[0.5, -1.0], scale=[2.0, 0.25], axis=1),
    "minmax": MinMax(lo=-3.0, hi=5.0),
    "log-affine": Chain([Log(floor=1e-9), Affine(shift=[0.3], scale=[1.7])]),
    "per-channel": PerChannel([Log(floor=1e-9), Affine(shift=[1.0], scale=[3.0])]),
}


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2 ** 31 - 1))
def test_log_derivative_matches_finite_differences(name, seed):
    t = TRANSFORMS[name]
    x = np.random.default_rng(seed).uniform(0.2, 3.0, size=(3, 2, 4))
    h = 1e-6 * x
    numeric = np.log(np.abs((t.forward(x + h) - t.forward(x - h)) / (2 * h)))
    assert np.allclose(t.log_abs_derivative(x), numeric, atol=1e-6)
    assert np.allclose(t.log_abs_det_jacobian(x), numeric.reshape(3, -1).sum(1), atol=1e-5)


def test_log_jacobian_below_the_floor_raises():
    with pytest.raises(ValueError, match="above the floor"):
        Log(floor=1e-6).log_abs_derivative(np.array([1.0, -2.0]))


class _Model:
    """A model-like object: the exact denoiser of N(0, I) in normalized space behind a transform."""

    def __init__(self, transform, d: int = 3, space: ParamSpace | None = None, field_shape=None, mask=None):
        self.schedule = make_schedule("cosine", T=1000)
        self.transform = transform
        self.param_space = space or ParamSpace([])
        self.field_shape = field_shape or (d,)
        self.mask = mask
        self._gauss = GaussianData(torch.zeros(int(np.prod(self.field_shape))), torch.eye(int(np.prod(self.field_shape))))

    def _denoiser_for_sampling(self):
        shape = self.field_shape

        def denoise(x, sigma, cond=None):
            return self._gauss(x.reshape(x.shape[0], -1), sigma).reshape(x.shape[0], *shape)
        return denoise


def test_lognormal_density_in_data_units_matches_scipy():
    mu, s = 0.4, 0.8
    model = _Model(Chain([Log(floor=1e-12), Affine(shift=[mu], scale=[s], axis=0)]), d=3)
    x = np.exp(mu + s * np.random.default_rng(0).standard_normal((400, 3)))
    exact = scipy.stats.lognorm(s=s, scale=math.exp(mu)).logpdf(x).sum(1)
    ode = field_log_prob(model, x[:20], None, method="ode")
    assert np.abs(ode.values - exact[:20]).max() / 3 < 1e-3
    assert np.allclose(ode.log_jacobian, -np.log(s * x[:20]).sum(1))
    bound = field_log_prob(model, x, None, method="bound", batch_size=400)
    gap = exact - bound.values  # K is below log p, by ~1e-3 nats at T = 1000 for N(0, I) in normalized units
    assert abs(gap.mean()) < 4 * gap.std() / math.sqrt(len(gap)) + 0.01
    assert bound.kl_per_step.shape == (400, 999) and ode.kl_per_step is None
    bits = field_log_prob(model, x[:20], None, unit="bits_per_dim")
    assert np.allclose(bits.values, ode.values / (3 * math.log(2)), atol=1e-9)


def test_masked_fields_count_only_valid_points():
    mask = np.array([[True, True, False]])
    model = _Model(Affine(shift=[0.0], scale=[2.0], axis=1), field_shape=(1, 1, 3), mask=mask)
    x = 2.0 * np.random.default_rng(1).standard_normal((5, 1, 3))
    res = field_log_prob(model, x, None)
    exact = scipy.stats.norm(scale=2.0).logpdf(x[:, 0, :2]).sum(1)
    assert res.dim == 2 and np.abs(res.values - exact).max() < 2e-3
    y = x.copy()
    y[:, 0, 2] = np.nan  # a masked point may hold anything
    assert np.allclose(field_log_prob(model, y, None).values, res.values)


def test_bad_input_is_a_clear_error():
    space = ParamSpace([Parameter("index", "1", low=-3, high=-1)])
    model = _Model(Chain([Log(floor=1e-12), Affine(shift=[0.0], scale=[1.0], axis=0)]), d=3, space=space)
    good = np.ones((2, 3))
    with pytest.raises(RhoWorkflowError, match=r"shape \(2, 4\).*fix"):
        field_log_prob(model, np.ones((2, 4)), {"index": -2.0})
    with pytest.raises(ValueError, match="NaN/inf.*index \\(1, 0\\)"):
        field_log_prob(model, np.array([[1.0, 1, 1], [np.nan, 1, 1]]), {"index": -2.0})
    with pytest.raises(ValueError, match="value -1 .*log transform"):
        field_log_prob(model, np.array([[1.0, -1.0, 1.0]]), {"index": -2.0})
    with pytest.raises(ValueError, match="index"):
        field_log_prob(model, good, {"index": 0.5})  # outside the declared range [-3, -1]
    with pytest.raises(ValueError, match="2 fields but 3 parameter points"):
        field_log_prob(model, good, [{"index": -2.0}] * 3)
    with pytest.raises(ValueError, match="valid units|one of"):
        field_log_prob(model, good, {"index": -2.0}, unit="dB")
