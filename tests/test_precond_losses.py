"""Preconditioning identities and losses against the closed forms of Gaussian data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from gaussian import GaussianData
from rho_workflow.diffusion.losses import denoising_loss, loss_weight, sample_training_sigmas
from rho_workflow.diffusion.precond import PREDICTIONS, Denoiser, guided
from rho_workflow.diffusion.schedules import make_schedule

DATA = GaussianData.make(d=8, seed=3)
SCHEDULE = make_schedule("cosine", T=1000)


# -- the closed-form Gaussian helpers themselves -------------------------------------------------

def test_gaussian_score_is_tweedie_and_grad_log_prob():
    x = DATA.sample(5, seed=1) + 0.7 * torch.randn(5, DATA.d, dtype=torch.float64)
    x.requires_grad_(True)
    grad, = torch.autograd.grad(DATA.log_prob(x, 0.7).sum(), x)
    assert torch.allclose(DATA.score(x, 0.7), grad, atol=1e-12)
    assert torch.allclose(DATA.score(x, 0.7), (DATA(x, 0.7) - x) / 0.49, atol=1e-12)  # Tweedie
    cov = DATA.cov + 0.49 * torch.eye(DATA.d, dtype=torch.float64)
    ref = torch.distributions.MultivariateNormal(DATA.mu, cov).log_prob(x)
    assert torch.allclose(DATA.log_prob(x, 0.7), ref, atol=1e-10)


# -- preconditioning -----------------------------------------------------------------------------

@pytest.mark.parametrize("sigma_data", [1.0, 0.5])
@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_denoiser_reproduces_the_exact_denoiser(prediction, sigma_data):
    """A network that predicts its target exactly makes D the exact denoiser (c_in, c_noise round trip)."""
    den = Denoiser(DATA.as_net(prediction, sigma_data), prediction, sigma_data)
    x = DATA.sample(6, seed=2) + 3.0 * torch.randn(6, DATA.d, dtype=torch.float64)
    sigma = torch.tensor([0.01, 0.1, 1.0, 3.0, 30.0, 300.0], dtype=torch.float64)
    assert torch.allclose(den(x, sigma), DATA(x, sigma), rtol=1e-9, atol=1e-9)
    assert torch.allclose(den(x, 2.0), DATA(x, 2.0), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("sigma_data", [1.0, 0.5])
@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_target_inverts_the_skip_connection(prediction, sigma_data):
    """EDM eq. 8: c_skip (x0 + sigma n) + c_out target(x0, n, sigma) == x0."""
    den = Denoiser(lambda *a: None, prediction, sigma_data)
    x0, n = torch.randn(4, 3, 5, dtype=torch.float64), torch.randn(4, 3, 5, dtype=torch.float64)
    sigma = torch.tensor([0.002, 0.5, 2.0, 80.0], dtype=torch.float64)
    c = den.coefficients(sigma)
    s = sigma[:, None, None]
    rebuilt = c.c_skip[:, None, None] * (x0 + s * n) + c.c_out[:, None, None] * den.target(x0, n, sigma)
    assert torch.allclose(rebuilt, x0, atol=1e-12)
    if prediction == "v" and sigma_data == 1.0:  # -v of Salimans & Ho: alpha n - sigma_vp x0
        v = (n - s * x0) / torch.sqrt(1 + s ** 2)
        assert torch.allclose(den.target(x0, n, sigma), -v, atol=1e-12)
    if prediction == "eps":
        assert torch.equal(den.target(x0, n, sigma), n)


class _Recorder(nn.Module):
    def __init__(self, dtype: torch.dtype):
        super().__init__()
        self.w = nn.Parameter(torch.ones((), dtype=dtype))
        self.seen: list = []

    def forward(self, x_in, c_noise, cond):
        self.seen.append((x_in, c_noise, cond))
        return self.w * x_in


@pytest.mark.parametrize("net_dtype, x_dtype", [(torch.float32, torch.float64), (torch.float64, torch.float32),
                                                 (torch.bfloat16, torch.float32)])
def test_network_inputs_and_dtypes(net_dtype, x_dtype):
    net = _Recorder(net_dtype)
    den = Denoiser(net, "v", sigma_data=0.5)
    x = torch.randn(3, 2, 4, dtype=x_dtype)
    sigma = torch.tensor([0.1, 1.0, 10.0], dtype=torch.float64)
    cond = torch.zeros(3, 2, dtype=torch.float64)
    out = den(x, sigma, cond)
    x_in, c_noise, seen_cond = net.seen[0]
    assert out.dtype == x_dtype and out.shape == x.shape
    assert x_in.dtype == net_dtype and c_noise.dtype == net_dtype and c_noise.shape == (3,)
    assert seen_cond is cond
    tol = 1e-2 if net_dtype == torch.bfloat16 else 1e-6
    c_in = 1 / torch.sqrt(sigma ** 2 + 0.25)
    assert torch.allclose(x_in.double(), c_in[:, None, None] * x.double(), rtol=tol)
    assert torch.allclose(c_noise.double(), torch.log(sigma) / 4, rtol=tol, atol=tol)


def test_denoiser_errors():
    with pytest.raises(ValueError, match="valid predictions"):
        Denoiser(lambda *a: None, "score")
    with pytest.raises(ValueError, match="sigma_data"):
        Denoiser(lambda *a: None, "v", sigma_data=0.0)
    den = Denoiser(DATA.as_net("x0"), "x0")
    with pytest.raises(ValueError, match=r"shape \(B,\)"):
        den(torch.zeros(4, DATA.d), torch.ones(3))


def test_guidance():
    def toy(x, sigma, cond=None):
        return x * 0.5 + (0.0 if cond is None else cond.sum(1, keepdim=True))

    assert guided(toy, 0.0) is toy
    x, cond = torch.randn(3, 4), torch.randn(3, 2)
    d_c, d_null = toy(x, 1.0, cond), toy(x, 1.0, None)
    assert torch.allclose(guided(toy, 2.5)(x, 1.0, cond), d_c + 2.5 * (d_c - d_null))
    assert torch.equal(guided(toy, 2.5)(x, 1.0, None), d_null)
    den = Denoiser(DATA.as_net("v"), "v")
    assert guided(den, 1.0).prediction == "v"
    with pytest.raises(ValueError, match=">= 0"):
        guided(toy, -1.0)


# -- loss weights --------------------------------------------------------------------------------

def test_plain_weights_are_one_over_c_out_squared():
    sigma = torch.tensor([0.01, 0.3, 1.0, 7.0, 80.0], dtype=torch.float64)
    for prediction in PREDICTIONS:
        for sd in (1.0, 0.5):
            c_out = Denoiser(lambda *a: None, prediction, sd).coefficients(sigma).c_out
            assert torch.allclose(loss_weight(sigma, prediction, sd), 1 / c_out ** 2, rtol=1e-12)


def test_min_snr_weights_follow_hang_et_al():
    sigma = torch.tensor([0.01, 0.3, 1 / math.sqrt(5), 1.0, 7.0], dtype=torch.float64)
    snr = 1 / sigma ** 2
    for prediction in PREDICTIONS:
        assert torch.allclose(loss_weight(sigma, prediction, 1.0, "min-snr", gamma=5.0), torch.clamp(snr, max=5.0))
    # their per-target forms: min(SNR, g)/SNR on the eps loss, min(SNR, g)/(SNR + 1) on the v loss
    ms = loss_weight(sigma, "eps", 1.0, "min-snr")
    assert torch.allclose(ms / loss_weight(sigma, "eps"), torch.clamp(snr, max=5.0) / snr)
    assert torch.allclose(ms / loss_weight(sigma, "v", 1.0), torch.clamp(snr, max=5.0) / (snr + 1))
    with pytest.raises(ValueError, match="valid weightings"):
        loss_weight(sigma, "v", 1.0, "p2")


def test_training_sigmas():
    g = torch.Generator().manual_seed(0)
    s = sample_training_sigmas(SCHEDULE, 20000, g, how="schedule")
    assert s.dtype == torch.float64 and s.shape == (20000,)
    assert bool(torch.isin(s, SCHEDULE.sigmas).all())
    log_s = torch.log(sample_training_sigmas(SCHEDULE, 20000, g, how="lognormal", p_mean=-1.2, p_std=1.2))
    assert abs(float(log_s.mean()) + 1.2) < 4 * 1.2 / math.sqrt(20000)
    assert abs(float(log_s.std()) - 1.2) < 4 * 1.2 / math.sqrt(2 * 20000)
    with pytest.raises(ValueError, match="valid choices"):
        sample_training_sigmas(SCHEDULE, 4, g, how="uniform")


# -- the loss against its closed-form expectation ------------------------------------------------

def _posterior_diag(sigma: np.ndarray) -> np.ndarray:
    """diag of Cov[x0 | x] for each sigma, shape (len(sigma), d)."""
    lam, U = DATA.lam.numpy(), DATA.U.numpy()
    post = lam * sigma[:, None] ** 2 / (lam + sigma[:, None] ** 2)
    return post @ (U ** 2).T


def _expected_loss(prediction, weighting, how, keep=None):
    """E_sigma[lambda(sigma) mean_k Cov[x0|x]_kk], over the schedule's steps or by Gauss-Hermite (lognormal)."""
    if how == "schedule":
        sigma, p = SCHEDULE.sigmas.numpy(), np.full(SCHEDULE.T, 1 / SCHEDULE.T)
    else:
        nodes, w = np.polynomial.hermite_e.hermegauss(120)
        sigma, p = np.exp(-1.2 + 1.2 * nodes), w / w.sum()
    diag = _posterior_diag(sigma)
    per_sigma = diag[:, keep].mean(1) if keep is not None else diag.mean(1)
    lam = loss_weight(torch.from_numpy(sigma), prediction, 1.0, weighting).numpy()
    return float((p * lam * per_sigma).sum())


def _loss_estimate(denoiser, how, weighting, mask=None, batches=16, batch=2000, **kw):
    values = []
    for k in range(batches):
        g = torch.Generator().manual_seed(100 + k)
        x0 = DATA.sample(batch, seed=1000 + k)
        values.append(float(denoising_loss(denoiser, x0, None, SCHEDULE, generator=g, weighting=weighting,
                                           sigma_sampling=how, mask=mask, **kw)))
    v = np.array(values)
    return v.mean(), v.std(ddof=1) / math.sqrt(len(v))


@pytest.mark.parametrize("how", ["schedule", "lognormal"])
@pytest.mark.parametrize("prediction, weighting", [("x0", "plain"), ("eps", "plain"), ("v", "plain"),
                                                   ("v", "min-snr")])
def test_loss_of_exact_denoiser_is_trace_of_posterior_covariance(prediction, weighting, how):
    """The optimal denoiser's loss is E[lambda(sigma) tr Cov[x0 | x] / d], through D and through F."""
    expected = _expected_loss(prediction, weighting, how)
    through_d = _loss_estimate(DATA, how, weighting, prediction=prediction)
    through_f = _loss_estimate(Denoiser(DATA.as_net(prediction), prediction), how, weighting)
    for mean, se in (through_d, through_f):
        assert abs(mean - expected) < 4 * se, (mean, se, expected)
    assert abs(through_d[0] - through_f[0]) < 1e-6 * expected  # same draws, same loss


def test_mask_averages_over_valid_points_only():
    keep = [0, 2, 3, 7]
    mask = torch.zeros(DATA.d, dtype=torch.bool)
    mask[keep] = True

    def nan_outside(x, sigma, cond=None):  # invalid points must not reach the loss
        return torch.where(mask, DATA(x, sigma), torch.nan)

    mean, se = _loss_estimate(nan_outside, "schedule", "plain", mask=mask, prediction="x0")
    expected = _expected_loss("x0", "plain", "schedule", keep=keep)
    assert abs(mean - expected) < 4 * se, (mean, se, expected)
    assert abs(expected - _expected_loss("x0", "plain", "schedule")) > 8 * se  # the mask matters
    x0 = DATA.sample(4)
    with pytest.raises(ValueError, match="no valid point"):
        denoising_loss(DATA, x0, None, SCHEDULE, mask=torch.zeros(DATA.d, dtype=torch.bool))
    with pytest.raises(ValueError, match="boolean"):
        denoising_loss(DATA, x0, None, SCHEDULE, mask=torch.ones(DATA.d))
    with pytest.raises(ValueError, match="does not broadcast"):
        denoising_loss(DATA, x0, None, SCHEDULE, mask=torch.ones(3, dtype=torch.bool))


def test_loss_needs_a_prediction_for_bare_denoisers():
    with pytest.raises(ValueError, match="prediction="):
        denoising_loss(lambda x, s, c=None: x, DATA.sample(4), None, SCHEDULE)


# -- EMA profiles ----------------------------------------------------------------------------------
def test_power_ema_averages_with_weights_growing_as_t_to_the_gamma():
    """EDM2's power-function EMA: after N steps, the average of the weights theta_t = t is
    sum t^(g+1) / sum t^g = (g + 1) / (g + 2) N (large N), and its gamma gives the std asked."""
    from rho_workflow.training.trainer import EMA, power_ema_gamma

    g = power_ema_gamma(0.10)
    assert abs((g + 1) / ((g + 2) ** 2 * (g + 3)) - 0.01) < 1e-9 and abs(g - 6.94) < 0.01
    net = nn.Linear(1, 1, bias=False)
    ema = EMA(net, decay=0.0, kind="power", std=0.10)
    n = 2000
    for step in range(n):
        with torch.no_grad():
            net.weight.fill_(step + 1.0)
        ema.update(net, step)
    t = torch.arange(1, n + 1, dtype=torch.float64)
    exact = float((t ** g * t).sum() / (t ** g).sum())
    assert abs(float(ema.state_dict()["weight"]) / exact - 1) < 2e-3
    assert abs(exact / n - (g + 1) / (g + 2)) < 2e-3
    with pytest.raises(ValueError, match="ema_std"):
        power_ema_gamma(0.3)
