"""Observation-conditioned sampling against the closed forms of Gaussian data.

With the exact denoiser of ``N(mu, Sigma)`` the Tweedie-moment update of
:mod:`rho_workflow.diffusion.posterior` is exact, so every sampler run with the conditioned
denoiser must reproduce the analytic conditional Gaussian: the known-region conditional
(inpainting), ``N(mu + S (S + s^2)^-1 (y - mu), S - S (S + s^2)^-1 S)`` (denoising) and the
kriging posterior of a Gaussian random field observed at a few stations.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gaussian import GaussianData, StreamGenerator
from rho_workflow.data.synthetic.random_fields import _eigenvalues
from rho_workflow.diffusion.posterior import LinearObservation, ObservedDenoiser, observed
from rho_workflow.diffusion.samplers import SAMPLERS, get_sampler, prior
from rho_workflow.diffusion.schedules import make_schedule, sampling_sigmas

DATA = GaussianData.make(d=8, seed=3)
SCHEDULE = make_schedule("linear", T=1000)
N = 6000
# (sampler, spacing, steps): each family, at settings whose discretization error on the
# unconditioned Gaussian is below 1% (tests/test_samplers.py).
FAMILIES = [("ddpm", "discrete", 500), ("ddim", "discrete", 200), ("dpmpp_2m", "log-snr", 50),
            ("dpmpp_3m", "log-snr", 30), ("heun", "karras", 40), ("unipc", "log-snr", 30),
            ("unipc_bh1", "log-snr", 30)]
assert {f[0] for f in FAMILIES} == set(SAMPLERS), "every sampler family is tested with observations"


def _sample(denoiser, data_dim: int, name: str, spacing: str, steps: int, seed: int = 1) -> torch.Tensor:
    sigmas = sampling_sigmas(SCHEDULE, steps, spacing)
    gen = StreamGenerator(seed=seed, batch=N)
    x = prior(gen, (data_dim,), float(sigmas[0]))
    return get_sampler(name)(denoiser, x, sigmas, generator=gen)


def _check_moments(samples: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor, tol_cov: float) -> None:
    sd = cov.diagonal().clamp_min(1e-12).sqrt()
    err_mean = (samples.mean(0) - mean) / sd
    assert float(err_mean.abs().max()) < 5 / math.sqrt(N) + 0.02, err_mean
    emp = torch.cov(samples.T)
    rel = float(torch.linalg.norm(emp - cov) / torch.linalg.norm(cov))
    assert rel < tol_cov, rel


def _conditional(idx_obs: list[int], y: torch.Tensor, noise_sd: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact N(mean, cov) of x0 given y = x0[idx_obs] + N(0, noise_sd^2)."""
    S, mu = DATA.cov, DATA.mu
    A = torch.eye(DATA.d, dtype=torch.float64)[idx_obs]
    G = A @ S @ A.T + noise_sd ** 2 * torch.eye(len(idx_obs), dtype=torch.float64)
    K = S @ A.T @ torch.linalg.inv(G)
    return mu + K @ (y - A @ mu), S - K @ A @ S


@pytest.mark.parametrize("name, spacing, steps", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_inpainting_matches_conditional_gaussian(name, spacing, steps):
    known = [0, 3, 5]
    y = torch.tensor([0.7, -1.1, 0.4], dtype=torch.float64)
    obs = LinearObservation.build(known, np.ones(3), y, 0.0)
    den = ObservedDenoiser(DATA, obs, cg_iters=DATA.d, cg_tol=1e-10)
    samples = _sample(den, DATA.d, name, spacing, steps)
    mean, cov = _conditional(known, y, 0.0)
    # the known cells come back exactly; the rest follow the conditional Gaussian
    assert torch.allclose(samples[:, known], y.expand(N, 3), atol=1e-3)
    free = [i for i in range(DATA.d) if i not in known]
    _check_moments(samples[:, free], mean[free], cov[free][:, free], tol_cov=0.08)


@pytest.mark.parametrize("name, spacing, steps", FAMILIES[2:4], ids=[f[0] for f in FAMILIES[2:4]])
def test_denoising_matches_conditional_gaussian(name, spacing, steps):
    noise_sd = 0.5
    y = DATA.sample(1, seed=9)[0] + noise_sd * torch.randn(DATA.d, generator=torch.Generator().manual_seed(2),
                                                            dtype=torch.float64)
    obs = LinearObservation.build(np.arange(DATA.d), np.ones(DATA.d), y, noise_sd)
    samples = _sample(observed(DATA, obs, cg_iters=DATA.d, cg_tol=1e-10), DATA.d, name, spacing, steps)
    mean, cov = _conditional(list(range(DATA.d)), y, noise_sd)
    _check_moments(samples, mean, cov, tol_cov=0.06)


def test_general_log_r_takes_the_perturbation_form_and_the_linear_form_is_the_better_one():
    """A general log r goes through the first-order perturbation form (Sohl-Dickstein eq. 22): it
    pulls the samples toward the observation; for a Gaussian r the linear form is exact and must
    beat it on the mean and the covariance."""
    y = torch.tensor([1.5], dtype=torch.float64)
    log_r = lambda x0: -0.5 * ((x0[:, 0] - y) / 0.3) ** 2  # noqa: E731
    dps = _sample(observed(DATA, log_r=log_r), DATA.d, "dpmpp_2m", "log-snr", 50)
    exact_mean, exact_cov = _conditional([0], y, 0.3)
    assert float(dps[:, 0].mean()) > float(DATA.mu[0]) + 0.5  # moved most of the way to y = 1.5
    lin = _sample(observed(DATA, LinearObservation.build([0], [1.0], y, 0.3), cg_iters=8), DATA.d,
                  "dpmpp_2m", "log-snr", 50)
    err = lambda s: float(torch.linalg.norm(torch.cov(s.T) - exact_cov))  # noqa: E731
    assert err(lin) < err(dps)
    assert abs(float(lin[:, 0].mean()) - float(exact_mean[0])) < 0.03
    assert abs(float(lin[:, 0].mean()) - float(exact_mean[0])) < abs(float(dps[:, 0].mean()) - float(exact_mean[0]))


# -- point observations of a Gaussian random field: the kriging posterior ----------------------

class CirculantGRF(GaussianData):
    """A 2D periodic Gaussian random field (the package's power-law spectrum) as GaussianData."""

    def __init__(self, n: int, index: float, amplitude: float, box: float = 100.0):
        lam = _eigenvalues(index, amplitude, n, box, 2, 0.5).reshape(-1)
        lam[0] = lam[1:].min()  # give the mean mode a variance: a density on all of R^(n*n)
        F = np.fft.fft2(np.eye(n * n).reshape(n * n, n, n)).reshape(n * n, n * n)
        cov = np.real(np.conj(F.T) @ np.diag(lam) @ F) / (n * n)
        super().__init__(torch.zeros(n * n, dtype=torch.float64), torch.as_tensor((cov + cov.T) / 2))


def test_point_observations_match_kriging():
    n = 8
    grf = CirculantGRF(n, index=-2.0, amplitude=2.0)
    truth = grf.sample(1, seed=4)[0]
    rng = np.random.default_rng(0)
    # five stations between cell centres: bilinear rows of 4 weights (periodic neighbours)
    rows_idx, rows_w = [], []
    for _ in range(5):
        fx, fy = rng.uniform(0, n - 1, size=2)
        i, j, a, b = int(fx), int(fy), fx - int(fx), fy - int(fy)
        rows_idx.append([i * n + j, (i + 1) * n + j, i * n + j + 1, (i + 1) * n + j + 1])
        rows_w.append([(1 - a) * (1 - b), a * (1 - b), (1 - a) * b, a * b])
    A = np.zeros((5, n * n))
    for r, (idx, w) in enumerate(zip(rows_idx, rows_w)):
        A[r, idx] += w
    err = np.full(5, 0.05)
    y = A @ truth.numpy() + err * rng.standard_normal(5)
    obs = LinearObservation.build(rows_idx, rows_w, y, err)
    samples = _sample(ObservedDenoiser(grf, obs, cg_iters=10, cg_tol=1e-10), n * n, "dpmpp_3m", "log-snr", 30)
    # kriging (GP regression) posterior
    S = grf.cov.numpy()
    G = A @ S @ A.T + np.diag(err ** 2)
    K = S @ A.T @ np.linalg.inv(G)
    k_mean, k_cov = K @ y, S - K @ A @ S
    sd = np.sqrt(np.diag(k_cov))
    z = (samples.mean(0).numpy() - k_mean) / sd
    assert np.abs(z).max() < 5 / math.sqrt(N) * 1.0 + 0.03, np.abs(z).max()
    var_ratio = samples.var(0).numpy() / np.diag(k_cov)
    assert np.abs(var_ratio - 1).max() < 0.12, var_ratio
    # at the stations the posterior is much narrower than the prior
    at = A @ samples.numpy().T
    assert (at.std(1) < 0.5 * np.sqrt(np.diag(A @ S @ A.T))).all()


def test_observation_rules():
    with pytest.raises(ValueError, match=">= 0"):
        LinearObservation.build([0], [1.0], [0.0], -1.0)
    with pytest.raises(ValueError, match="finite"):
        LinearObservation.build([0], [1.0], [float("nan")], 0.1)
    with pytest.raises(ValueError, match="needs an observation"):
        ObservedDenoiser(DATA)
    assert observed(DATA) is DATA


def test_conjugate_gradients_never_return_a_worse_fit_than_no_correction():
    """A learned network's Jacobian can be indefinite at high noise: the solve keeps its best iterate."""
    from rho_workflow.diffusion.posterior import _conjugate_gradients

    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    M = q @ torch.diag(torch.tensor([3.0, 1.0, 0.5, -0.2, -1.0, 2.0], dtype=torch.float64)) @ q.T
    b = torch.randn(4, 6, generator=g, dtype=torch.float64)
    v, _, rel = _conjugate_gradients(lambda u: u @ M.T, b, 20, 1e-10)
    assert rel <= 1.0
    assert bool(((b - v @ M.T).norm(dim=1) <= b.norm(dim=1) + 1e-12).all())
    # on a positive definite system it is plain CG: the exact solution
    S = q @ torch.diag(torch.tensor([3.0, 1.0, 0.5, 0.2, 1.5, 2.0], dtype=torch.float64)) @ q.T
    v, _, rel = _conjugate_gradients(lambda u: u @ S.T, b, 20, 1e-12)
    assert torch.allclose(v, torch.linalg.solve(S, b.T).T, atol=1e-8) and rel < 1e-10
