"""Likelihoods of the Gaussian diffusion against closed forms (issue 9).

Gaussian data with the exact denoiser (tests/gaussian.py) has a known density and known
per-step terms of the bound: ``E ||x0 - D(x_t)||^2 = sum_i lam_i s^2/(lam_i + s^2)``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gaussian import GaussianData, StreamGenerator
from rho_workflow.diffusion.flow_likelihood import ODEIntegrationError, ode_log_prob
from rho_workflow.diffusion.likelihood import (gaussian_entropy_diagnostics, log_prob, null_log_prob, to_unit,
                                               variational_bound)
from rho_workflow.diffusion.losses import denoising_loss
from rho_workflow.diffusion.precond import Denoiser
from rho_workflow.diffusion.random import BatchGenerator
from rho_workflow.diffusion.schedules import make_schedule
from rho_workflow.models.mlp import MLPNet


def _expected_terms(data: GaussianData, schedule, variance: str = "beta"):
    """Closed forms, averaged over x0 ~ N(mu, Sigma): per-step KL (t = 2..T), decoder, prior (nats)."""
    s = [float(v) for v in schedule.sigmas]
    lam, d = data.lam.numpy(), data.d

    def err2(sig):
        return float((lam * sig ** 2 / (lam + sig ** 2)).sum())

    kls = []
    for i in range(1, len(s)):
        t, u = s[i], s[i - 1]
        v_q = u * u * (t * t - u * u) / (t * t)
        v_p = v_q if variance == "beta_tilde" else (t * t - u * u) * (1 + u * u) / (1 + t * t)
        kls.append(0.5 * d * (v_q / v_p - 1 - math.log(v_q / v_p)) + (1 - u * u / (t * t)) ** 2 * err2(t) / (2 * v_p))
    v_dec = s[0] ** 2 / (1 + s[0] ** 2)
    decoder = 0.5 * err2(s[0]) / v_dec + 0.5 * d * math.log(2 * math.pi * v_dec)
    r = s[-1] ** 2 / (1 + s[-1] ** 2)
    sq = float((data.mu ** 2).sum() + data.lam.sum())
    prior = 0.5 * d * (r - 1 - math.log(r)) + sq / (2 * (1 + s[-1] ** 2))
    return np.array(kls), decoder, prior


def test_ode_log_density_matches_gaussian_within_1e3_nats_per_dim():
    data = GaussianData.make(d=6, seed=1)
    x = data.sample(32, seed=2)
    res = log_prob(data, make_schedule("cosine", T=1000), x, method="ode")
    exact = data.log_prob(x).numpy()
    assert res.method == "ode-exact" and res.stderr is None
    assert np.abs(res.values - exact).max() / data.d < 1e-3
    assert res.nfe > 10 and res.wall_s > 0 and res.info["rtol"] == 1e-5


def test_hutchinson_above_32_dims_is_unbiased_with_its_standard_error():
    data = GaussianData.make(d=40, seed=3, lam_min=0.3, lam_max=1.5)
    x = data.sample(16, seed=4)
    res = ode_log_prob(data, make_schedule("cosine", T=1000), x, n_probes=8, rtol=1e-4, atol=1e-4,
                       generator=BatchGenerator(range(16)))
    exact = data.log_prob(x).numpy()
    assert res.method == "ode-hutchinson" and res.info["n_probes"] == 8
    assert np.all(res.stderr > 0)
    z = (res.values - exact) / res.stderr
    assert abs(z.mean()) < 4 / math.sqrt(len(z)) + 0.5 and np.abs(z).max() < 6


def test_ode_that_cannot_reach_tolerance_raises_with_the_sigma_reached():
    data = GaussianData.make(d=2, seed=0)
    with pytest.raises(ODEIntegrationError, match="reached only sigma="):
        ode_log_prob(data, make_schedule("cosine", T=100), data.sample(4), max_nfe=8)
    with pytest.raises(ValueError, match="valid methods"):
        log_prob(data, make_schedule("cosine", T=100), data.sample(4), method="exact")


def test_every_per_step_kl_term_equals_its_closed_form():
    data = GaussianData.make(d=2, seed=5)
    schedule = make_schedule("cosine", T=20)
    n = 20000
    res = variational_bound(data, schedule, data.sample(n, seed=6), generator=StreamGenerator(7, n))
    kls, decoder, prior = _expected_terms(data, schedule)
    assert res.kl.shape == (n, 19) and list(res.steps) == list(range(2, 21))
    se = res.kl.std(0) / math.sqrt(n)
    assert np.all(np.abs(res.kl.mean(0) - kls) < 5 * se + 1e-9)
    assert abs(res.decoder.mean() - decoder) < 5 * res.decoder.std() / math.sqrt(n)
    assert abs(res.prior.mean() - prior) < 5 * res.prior.std() / math.sqrt(n)
    total = -(res.prior + res.decoder + res.kl.sum(1))
    assert np.allclose(res.values, total)


def test_bound_is_below_the_log_density_and_approaches_it_as_T_grows():
    data = GaussianData.make(d=2, seed=8)
    n = 20000
    x = data.sample(n, seed=9)
    log_p = data.log_prob(x).numpy()
    gaps, ses = [], []
    for T in (10, 40, 200):
        res = variational_bound(data, make_schedule("cosine", T=T), x, generator=StreamGenerator(T, n))
        diff = log_p - res.values
        gaps.append(diff.mean())
        ses.append(diff.std() / math.sqrt(n))
    assert gaps[0] > 4 * ses[0]  # strictly below at small T
    assert all(g > -4 * s for g, s in zip(gaps, ses))  # never above
    assert gaps[0] - gaps[1] > 4 * math.hypot(ses[0], ses[1])
    assert gaps[2] < gaps[1] and abs(gaps[2]) < 4 * ses[2] + 0.01


def test_bound_standard_errors_from_noise_draws_and_from_steps():
    data = GaussianData.make(d=2, seed=10)
    x = data.sample(8, seed=11)
    sch = make_schedule("cosine", T=50)
    two = variational_bound(data, sch, x, generator=BatchGenerator(range(8)), n_noise=2)
    assert two.stderr.shape == (8,) and np.all(two.stderr > 0) and two.nfe == 100
    mc = variational_bound(data, sch, x, generator=BatchGenerator(range(8)), t_samples=10,
                           step_generator=torch.Generator().manual_seed(0))
    assert mc.method == "bound-mc-t" and mc.kl.shape == (8, 10) and np.all(mc.stderr > 0)
    with pytest.raises(ValueError, match="step_generator"):
        variational_bound(data, sch, x, generator=BatchGenerator(range(8)), t_samples=10)


def test_units_and_the_null_model():
    x = torch.zeros(3, 2)
    null = null_log_prob(x)
    assert np.allclose(null, -math.log(2 * math.pi))
    assert np.allclose(to_unit(null, "bits_per_dim", 2), -math.log(2 * math.pi) / 2 / math.log(2))
    with pytest.raises(ValueError, match="valid units"):
        to_unit(null, "dB", 2)


@pytest.mark.parametrize("lam", [0.05, 0.5, 1.0])
def test_eq24_bounds_contain_the_reverse_entropy_of_gaussian_data(lam):
    schedule = make_schedule("linear", T=200)
    diag = gaussian_entropy_diagnostics(schedule)
    beta, ab = schedule.betas.numpy(), schedule.alpha_bar.numpy()
    ab_prev = np.concatenate([[1.0], ab[:-1]])
    v_prev = ab_prev * lam + 1 - ab_prev  # Var x_{t-1} (VP units), data variance lam
    cond_var = v_prev * beta / ((1 - beta) * v_prev + beta)  # Var(x_{t-1} | x_t)
    h = 0.5 * np.log(2 * math.pi * math.e * cond_var)
    assert np.all(diag.reverse_lower[1:] <= h[1:] + 1e-9) and np.all(h <= diag.reverse_upper + 1e-9)
    assert np.allclose(diag.entropy_given_x0, 0.5 * np.log(2 * math.pi * math.e * (1 - ab)))


def _train_mixture_denoiser(steps: int = 500) -> Denoiser:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    centres = torch.tensor([[-1.0, 0.0], [1.0, 0.0]])
    denoiser = Denoiser(MLPNet(2, hidden=64, depth=2), prediction="v", sigma_data=1.0)
    schedule = make_schedule("cosine", T=1000)
    opt = torch.optim.Adam(denoiser.parameters(), lr=3e-3)
    for _ in range(steps):
        k = torch.randint(2, (256,), generator=g)
        x0 = centres[k] + 0.4 * torch.randn(256, 2, generator=g)
        loss = denoising_loss(denoiser, x0, None, schedule, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return denoiser.eval()


def test_learned_2d_density_integrates_to_one():
    denoiser = _train_mixture_denoiser()
    edges = np.linspace(-5.0, 5.0, 41)
    centres = 0.5 * (edges[1:] + edges[:-1])
    gx, gy = np.meshgrid(centres, centres, indexing="ij")
    grid = torch.from_numpy(np.stack([gx.ravel(), gy.ravel()], 1))
    res = log_prob(denoiser, make_schedule("cosine", T=1000), grid, method="ode", rtol=1e-3, atol=1e-4)
    mass = float(np.exp(res.values).sum() * (edges[1] - edges[0]) ** 2)
    assert abs(mass - 1.0) < 0.02
