"""Closed forms for Gaussian data ``x0 ~ N(mu, Sigma)``, shared by the tests of the modelling core.

With ``x = x0 + sigma n`` the marginal is ``N(mu, Sigma + sigma^2 I)``, the optimal denoiser is
``E[x0 | x] = mu + Sigma (Sigma + sigma^2 I)^{-1} (x - mu)`` and the posterior covariance is
``Sigma - Sigma (Sigma + sigma^2 I)^{-1} Sigma``. All of it is diagonal in the eigenbasis
``Sigma = U diag(lam) U^T``, which is how it is computed here (float64; a row's result does
not depend on the other rows of the batch, which the seeding tests rely on).
"""

from __future__ import annotations

import math

import torch

from rho_workflow.diffusion.precond import Denoiser, batch_sigma


class GaussianData:
    """Gaussian data ``N(mu, Sigma)`` in dimension ``d`` and its exact denoiser, score and density.

    An instance is a denoiser: ``data(x, sigma, cond=None)`` with ``x`` of shape ``(B, d)`` and
    ``sigma`` a scalar or ``(B,)`` (``cond`` is ignored). Its ``prediction`` is ``"x0"``.
    """

    prediction = "x0"
    sigma_data = 1.0

    def __init__(self, mu: torch.Tensor, cov: torch.Tensor):
        self.mu = torch.as_tensor(mu, dtype=torch.float64)
        self.cov = torch.as_tensor(cov, dtype=torch.float64)
        self.lam, self.U = torch.linalg.eigh(self.cov)
        self.d = self.mu.numel()

    @classmethod
    def make(cls, d: int = 8, seed: int = 0, lam_min: float = 0.1, lam_max: float = 2.0,
             mean_scale: float = 0.5) -> "GaussianData":
        """A non-diagonal covariance with eigenvalues geometric in [lam_min, lam_max], a random rotation."""
        g = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
        lam = torch.logspace(math.log10(lam_min), math.log10(lam_max), d, dtype=torch.float64)
        mu = mean_scale * torch.randn(d, generator=g, dtype=torch.float64)
        return cls(mu, q @ torch.diag(lam) @ q.T)

    # -- in the eigenbasis -----------------------------------------------------------------------
    def _to_eig(self, x: torch.Tensor) -> torch.Tensor:
        return (x.to(torch.float64) - self.mu) @ self.U

    def _from_eig(self, y: torch.Tensor) -> torch.Tensor:
        return self.mu + y @ self.U.T

    # -- closed forms ----------------------------------------------------------------------------
    def __call__(self, x: torch.Tensor, sigma, cond=None) -> torch.Tensor:
        """Exact denoiser ``mu + Sigma (Sigma + sigma^2 I)^{-1} (x - mu)``, in ``x.dtype``."""
        s2 = batch_sigma(sigma, x)[:, None] ** 2
        return self._from_eig(self._to_eig(x) * self.lam / (self.lam + s2)).to(x.dtype)

    def score(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """``grad log p(x; sigma) = -(Sigma + sigma^2 I)^{-1} (x - mu)``."""
        s2 = batch_sigma(sigma, x)[:, None] ** 2
        y = -self._to_eig(x) / (self.lam + s2)
        return y @ self.U.T

    def log_prob(self, x: torch.Tensor, sigma=0.0) -> torch.Tensor:
        """Exact log-density of ``N(mu, Sigma + sigma^2 I)`` at each row of ``x``."""
        s2 = batch_sigma(sigma, x)[:, None] ** 2
        var = self.lam + s2
        y = self._to_eig(x)
        return -0.5 * ((y ** 2 / var).sum(1) + torch.log(var).sum(1) + self.d * math.log(2 * math.pi))

    def posterior_cov(self, sigma: float) -> torch.Tensor:
        """``Cov[x0 | x] = Sigma - Sigma (Sigma + sigma^2 I)^{-1} Sigma``, shape (d, d)."""
        post = self.lam * sigma ** 2 / (self.lam + sigma ** 2)
        return self.U @ torch.diag(post) @ self.U.T

    def ode_map(self, sigma_from: float, sigma_to: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact probability-flow ODE flow ``x_to = A x_from + b`` (``A = U diag(sqrt((lam+s_to^2)/(lam+s_from^2))) U^T``)."""
        scale = torch.sqrt((self.lam + sigma_to ** 2) / (self.lam + sigma_from ** 2))
        A = self.U @ torch.diag(scale) @ self.U.T
        return A, self.mu - A @ self.mu

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        """``n`` exact samples of the data, (n, d) float64."""
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.d, generator=g, dtype=torch.float64)
        return self.mu + z @ (self.U * self.lam.sqrt()).T

    def as_net(self, prediction: str, sigma_data: float = 1.0):
        """A network ``F(x_in, c_noise, cond)`` whose :class:`Denoiser` is exactly this denoiser."""
        coef_of = Denoiser(lambda *a: None, prediction, sigma_data).coefficients

        def net(x_in: torch.Tensor, c_noise: torch.Tensor, cond=None) -> torch.Tensor:
            sigma = torch.exp(4 * c_noise.to(torch.float64))
            c_skip, c_out, c_in, _ = coef_of(sigma)
            x = x_in.to(torch.float64) / c_in[:, None]
            return ((self(x, sigma) - c_skip[:, None] * x) / c_out[:, None]).to(x_in.dtype)

        return net


class StreamGenerator:
    """A single ``torch.Generator`` with the noise interface of ``BatchGenerator``.

    Statistically equivalent to per-sample generators and about a hundred times faster for
    batches of thousands of samples, for the Monte-Carlo accuracy tests; the per-sample seeding
    contract is tested separately with ``BatchGenerator``.
    """

    def __init__(self, seed: int, batch: int):
        self.generator = torch.Generator().manual_seed(seed)
        self.batch = batch

    def __len__(self) -> int:
        return self.batch

    def randn(self, shape, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.randn((self.batch, *shape), generator=self.generator, dtype=dtype)

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        return torch.randn(x.shape, generator=self.generator, dtype=x.dtype).to(x.device)


class GaussianMixture:
    """A mixture ``sum_k w_k N(mu_k, diag(var_k))`` and its exact denoiser: a non-Gaussian closed form.

    ``E[x0 | x] = sum_k p(k | x) (mu_k + var_k / (var_k + sigma^2) (x - mu_k))`` with the
    posterior weights ``p(k | x) ~ w_k N(x; mu_k, var_k + sigma^2)``. Its probability-flow ODE
    is nonlinear, so the sampler tests use it to check what the Gaussian closed forms cannot
    (e.g. whether noise levels fitted on Gaussian data still help).
    """

    prediction = "x0"
    sigma_data = 1.0

    def __init__(self, weights: torch.Tensor, mus: torch.Tensor, variances: torch.Tensor):
        self.log_w = torch.log(torch.as_tensor(weights, dtype=torch.float64))
        self.mus = torch.as_tensor(mus, dtype=torch.float64)            # (K, d)
        self.variances = torch.as_tensor(variances, dtype=torch.float64)  # (K, d)
        self.d = self.mus.shape[1]

    @classmethod
    def make(cls, d: int = 16, seed: int = 1) -> "GaussianMixture":
        """Three components with means ~ N(0, I) and variances geometric in [0.01, 3] times 0.3, 1, 2."""
        g = torch.Generator().manual_seed(seed)
        mus = torch.randn(3, d, generator=g, dtype=torch.float64)
        lam = torch.logspace(-2, 0.5, d, dtype=torch.float64)
        return cls(torch.tensor([0.5, 0.3, 0.2]), mus, torch.stack([lam, 0.3 * lam, 2.0 * lam]))

    def __call__(self, x: torch.Tensor, sigma, cond=None) -> torch.Tensor:
        s2 = batch_sigma(sigma, x).to(torch.float64)[:, None, None] ** 2
        x = x.to(torch.float64)[:, None, :]
        var = self.variances + s2                                       # (B, K, d)
        log_p = self.log_w - 0.5 * (((x - self.mus) ** 2) / var + torch.log(var)).sum(-1)
        post = torch.softmax(log_p, dim=1)[..., None]
        return (post * (self.mus + self.variances / var * (x - self.mus))).sum(1)
