"""Binomial diffusion (Sohl-Dickstein et al. 2015, Table App.1) against closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rho_workflow.diffusion.binomial import (ExactProductReverse, FlipRateNet, binomial_betas, binomial_bound,
                                             binomial_entropy_diagnostics, binomial_loss, diffuse,
                                             forward_marginal, forward_posterior, sample_binomial)


def _kernel(beta: float) -> np.ndarray:
    """2x2 transition matrix ``K[a, b] = q(x^t = b | x^{t-1} = a)`` of one binomial step."""
    p1 = np.array([0.5 * beta, 1 - 0.5 * beta])  # q(x^t = 1 | x^{t-1} = 0, 1)
    return np.stack([1 - p1, p1], 1)


@pytest.mark.parametrize("T", [5, 40])
def test_forward_marginals_match_the_product_of_kernels(T):
    betas = binomial_betas(T).numpy()
    assert betas[-1] == 1.0 and np.isclose(betas[0], 1 / T)
    m = np.eye(2)
    for t in range(1, T + 1):
        m = m @ _kernel(betas[t - 1])
        for x0 in (0, 1):
            closed = float(forward_marginal(torch.tensor(float(x0)), t, T))
            assert abs(m[x0, 1] - closed) < 1e-12
    assert np.allclose(m, 0.5)  # q(x^T | x^0) = pi = B(0.5)


def test_forward_marginals_match_simulated_chains():
    T, n = 10, 200000
    g = torch.Generator().manual_seed(0)
    x0 = (torch.rand(n, 1, generator=g) < 0.3).double()
    x = x0.clone()
    betas = binomial_betas(T)
    for t in range(1, 5):
        p = x * (1 - betas[t - 1]) + 0.5 * betas[t - 1]
        x = (torch.rand(x.shape, generator=g, dtype=torch.float64) < p).double()
    for v in (0.0, 1.0):
        sel = x0[:, 0] == v
        freq = x[sel].mean().item()
        closed = float(forward_marginal(torch.tensor(v), 4, T))
        assert abs(freq - closed) < 5 * math.sqrt(closed * (1 - closed) / int(sel.sum()))
    direct = diffuse(x0, 4, T, g)
    assert abs(direct.mean().item() - x.mean().item()) < 0.01


def test_posterior_is_bayes_rule_on_the_kernel():
    T = 7
    beta = binomial_betas(T).numpy()
    for t in range(2, T + 1):
        for x0 in (0.0, 1.0):
            prev1 = float(forward_marginal(torch.tensor(x0), t - 1, T))
            joint = np.array([(1 - prev1) * _kernel(beta[t - 1])[0], prev1 * _kernel(beta[t - 1])[1]])  # [x_{t-1}, x_t]
            for xt in (0, 1):
                expected = joint[1, xt] / joint[:, xt].sum()
                got = float(forward_posterior(torch.tensor(float(xt)), torch.tensor(x0), t, T))
                assert abs(got - expected) < 1e-12


def test_bound_of_the_exact_reverse_equals_the_entropy_bound():
    p = torch.tensor([0.1, 0.5, 0.8])
    T, n = 30, 6000
    reverse = ExactProductReverse(p, T)
    g = torch.Generator().manual_seed(1)
    x0 = (torch.rand(n, 3, generator=g, dtype=torch.float64) < p).double()
    res = binomial_bound(reverse, x0, T, generator=g)
    assert np.allclose(res.prior, 0.0) and res.kl.shape == (n, T - 1)
    se = res.values.std() / math.sqrt(n)
    assert abs(res.values.mean() + reverse.entropy()) < 4 * se
    log_q = (x0 * torch.log(p) + (1 - x0) * torch.log(1 - p)).sum(1).numpy()  # K(x0) = log q(x0) in expectation
    assert abs((res.values - log_q).mean()) < 4 * (res.values - log_q).std() / math.sqrt(n)


def test_a_wrong_reverse_has_a_lower_bound():
    p = torch.tensor([0.1, 0.9])
    T, n = 20, 4000
    g = torch.Generator().manual_seed(2)
    x0 = (torch.rand(n, 2, generator=g, dtype=torch.float64) < p).double()
    exact = binomial_bound(ExactProductReverse(p, T), x0, T, generator=torch.Generator().manual_seed(3))
    wrong = binomial_bound(ExactProductReverse(1 - p, T), x0, T, generator=torch.Generator().manual_seed(3))
    assert wrong.values.mean() < exact.values.mean() - 1.0


def test_sampling_the_exact_reverse_reproduces_the_data_and_is_seeded():
    p = torch.tensor([0.2, 0.7])
    T = 25
    reverse = ExactProductReverse(p, T)
    x = sample_binomial(reverse, 20000, 2, T, torch.Generator().manual_seed(4))
    assert torch.all((x == 0) | (x == 1))
    assert torch.allclose(x.mean(0), p.double(), atol=0.015)
    again = sample_binomial(reverse, 20000, 2, T, torch.Generator().manual_seed(4))
    assert torch.equal(x, again)


def test_flip_rate_network_trains_towards_the_entropy():
    torch.manual_seed(0)
    p = torch.tensor([0.1, 0.5, 0.9, 0.3])
    T = 20
    net = FlipRateNet(4, T, hidden=32, depth=2)
    g = torch.Generator().manual_seed(5)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    bound = lambda: binomial_bound(net.reverse, data(2000), T, generator=torch.Generator().manual_seed(6)).values.mean()
    data = lambda n: (torch.rand(n, 4, generator=g, dtype=torch.float64) < p).double()
    before = bound()
    for _ in range(1000):
        loss = binomial_loss(net, data(256), generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = bound()
    entropy = ExactProductReverse(p, T).entropy()
    assert after > before + 0.5 and after < -entropy + 0.1 and after > -entropy - 0.15


def test_entropy_diagnostics_bracket_the_exact_reverse_step():
    T = 12
    diag = binomial_entropy_diagnostics(T)
    assert np.isclose(diag.reverse_upper[-1], math.log(2)) and np.isclose(diag.entropy_given_x0[-1], math.log(2))
    assert np.all(diag.reverse_lower <= diag.reverse_upper + 1e-12)
    p = 0.3  # H_q(X^{t-1} | X^t) of one bit of B(p) data, by enumeration
    betas = binomial_betas(T).numpy()
    for t in range(1, T + 1):
        prev1 = p * (T - t + 1) / T + 0.5 * (1 - (T - t + 1) / T)
        joint = np.array([(1 - prev1) * _kernel(betas[t - 1])[0], prev1 * _kernel(betas[t - 1])[1]])
        h_joint = -np.sum(joint * np.log(joint))
        marg = joint.sum(0)
        h = h_joint + np.sum(marg * np.log(marg))
        assert diag.reverse_lower[t - 1] - 1e-12 <= h <= diag.reverse_upper[t - 1] + 1e-12
