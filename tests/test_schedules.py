"""Schedules against their defining formulas; sampling noise levels against their contract."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rho_workflow.diffusion.schedules import SCHEDULES, make_schedule, sampling_sigmas

NAMES = sorted(SCHEDULES)


@pytest.mark.parametrize("T", [50, 1000])
@pytest.mark.parametrize("name", NAMES)
def test_alpha_bar_is_cumprod_of_betas_and_sigmas_are_ve(name, T):
    s = make_schedule(name, T=T)
    assert s.T == T and s.betas.dtype == s.alpha_bar.dtype == s.sigmas.dtype == torch.float64
    assert s.betas.shape == s.alpha_bar.shape == s.sigmas.shape == (T,)
    assert torch.allclose(s.alpha_bar, torch.cumprod(1 - s.betas, 0), rtol=1e-6, atol=0)
    assert torch.allclose(s.alpha_bar, 1 / (1 + s.sigmas ** 2), rtol=1e-6, atol=0)
    assert bool((s.sigmas[1:] > s.sigmas[:-1]).all())
    assert s.sigma_min == float(s.sigmas[0]) and s.sigma_max == float(s.sigmas[-1])


def test_linear_betas_follow_ho_et_al():
    s = make_schedule("linear", T=1000)
    assert math.isclose(float(s.betas[0]), 1e-4) and math.isclose(float(s.betas[-1]), 0.02)
    s250 = make_schedule("linear", T=250)  # scaled by 1000/T (Nichol & Dhariwal)
    assert math.isclose(float(s250.betas[0]), 4e-4) and math.isclose(float(s250.betas[-1]), 0.08)


@pytest.mark.parametrize("T", [10, 1000])
def test_sohl_dickstein_alpha_bar_is_closed_form(T):
    s = make_schedule("sohl-dickstein", T=T)
    t = torch.arange(1, T + 1, dtype=torch.float64)
    assert torch.allclose(s.betas[:-1], 1 / (T - t[:-1] + 1), rtol=1e-12)
    assert torch.allclose(s.alpha_bar[:-1], (T - t[:-1]) / T, rtol=1e-6, atol=1e-12)
    assert float(s.betas[-1]) == 0.999  # beta_T = 1 clipped at max_beta
    assert math.isclose(float(s.alpha_bar[-1]), (1 - 0.999) / T, rel_tol=1e-9)


@pytest.mark.parametrize("T", [50, 1000])
def test_cosine_alpha_bar_matches_nichol_dhariwal(T):
    s, offset, max_beta = make_schedule("cosine", T=T), 0.008, 0.999
    t = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((t + offset) / (1 + offset) * math.pi / 2) ** 2
    clipped = s.betas >= max_beta
    assert bool(clipped.any()) and bool(clipped[-1])
    first = int(clipped.nonzero()[0])
    assert torch.allclose(s.alpha_bar[:first], f[1:first + 1] / f[0], rtol=1e-6, atol=1e-12)


def test_unknown_schedule_lists_valid_names():
    with pytest.raises(ValueError, match="valid names are.*cosine.*linear.*sohl-dickstein"):
        make_schedule("quadratic")
    with pytest.raises(ValueError, match="T"):
        make_schedule("linear", T=1)
    with pytest.raises(ValueError, match="use T > 20"):
        make_schedule("linear", T=10)
    with pytest.raises(ValueError, match="unsupported option"):
        make_schedule("linear", s=0.1)


@pytest.mark.parametrize("name", NAMES)
def test_continuous_time_interpolates_discrete_steps(name):
    s = make_schedule(name, T=100)
    t = torch.arange(1, 101, dtype=torch.float64) / 100
    assert torch.allclose(s.sigma_at(t), s.sigmas, rtol=1e-10)
    assert torch.allclose(s.log_snr_at(t), s.log_snr, rtol=1e-10, atol=1e-10)
    assert torch.allclose(s.t_at(s.sigmas), t, rtol=0, atol=1e-10)
    dense = torch.linspace(0, 1, 2001, dtype=torch.float64)
    assert bool((s.sigma_at(dense).diff() > 0).all())
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        s.sigma_at(1.5)
    with pytest.raises(ValueError, match="sigma must lie"):
        s.t_at(2 * s.sigma_max)


@settings(max_examples=60, deadline=None)
@given(t=st.floats(0.0, 1.0), name=st.sampled_from(NAMES))
def test_t_at_inverts_sigma_at(t, name):
    s = _SCHEDULES[name]
    assert abs(float(s.t_at(s.sigma_at(t))) - t) < 1e-6


_SCHEDULES = {name: make_schedule(name, T=1000) for name in NAMES}


@pytest.mark.parametrize("spacing", ["karras", "discrete", "log-snr"])
@pytest.mark.parametrize("steps", [1, 2, 10, 50])
def test_sampling_sigmas_shape_order_endpoints(spacing, steps):
    s = _SCHEDULES["linear"]
    sig = sampling_sigmas(s, steps, spacing)
    assert sig.dtype == torch.float64 and sig.shape == (steps + 1,)
    assert float(sig[-1]) == 0.0 and bool((sig.diff() < 0).all())
    if spacing == "discrete":
        assert float(sig[0]) == s.sigma_max  # trailing: always includes t = T
        assert all(bool((s.sigmas == v).any()) for v in sig[:-1])  # the schedule's own levels
    else:
        assert math.isclose(float(sig[0]), min(s.sigma_max, 80.0), rel_tol=1e-12)
        if steps > 1:
            assert math.isclose(float(sig[-2]), s.sigma_min, rel_tol=1e-12)


def test_spacing_formulas():
    s = _SCHEDULES["cosine"]
    karras = sampling_sigmas(s, 10, "karras", rho=7.0, sigma_min=0.002, sigma_max=80.0)[:-1]
    i = torch.arange(10, dtype=torch.float64)
    expected = (80 ** (1 / 7) + i / 9 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7  # EDM eq. 5
    assert torch.allclose(karras, expected, rtol=1e-12)
    log_snr = torch.log(sampling_sigmas(s, 10, "log-snr", sigma_min=0.01, sigma_max=100.0)[:-1])
    assert torch.allclose(log_snr.diff(), torch.full((9,), float(log_snr[1] - log_snr[0]), dtype=torch.float64), rtol=1e-10)
    full = sampling_sigmas(s, s.T, "discrete")
    assert torch.equal(full[:-1], s.sigmas.flip(0))
    ten = sampling_sigmas(s, 10, "discrete")  # timesteps 1000, 900, ..., 100
    assert torch.equal(ten[:-1], s.sigmas[torch.arange(999, 0, -100)])


def test_sampling_sigmas_errors():
    s = _SCHEDULES["linear"]
    with pytest.raises(ValueError, match="valid spacings are"):
        sampling_sigmas(s, 10, "uniform")
    with pytest.raises(ValueError, match="steps"):
        sampling_sigmas(s, 0)
    with pytest.raises(ValueError, match="exceeds"):
        sampling_sigmas(s, 1001, "discrete")
    with pytest.raises(ValueError, match="cannot be set"):
        sampling_sigmas(s, 10, "discrete", sigma_max=10.0)
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        sampling_sigmas(s, 10, "karras", sigma_min=5.0, sigma_max=1.0)
