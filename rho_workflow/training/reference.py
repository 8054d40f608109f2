"""A stand-in for a perfectly trained model of Gaussian random fields, for checks of the method.

:class:`ExactGRFModel` has everything the likelihood, conditioning and inference code asks of
a trained model (``param_space``, ``field_shape``, ``transform``, ``schedule``, ``mask``,
``_denoiser_for_sampling()``), but its denoiser is the exact conditional denoiser of the
package's periodic Gaussian random field with a mean mode
(:func:`rho_workflow.data.synthetic.random_fields.gaussian_field_with_mean`), conditioned on
``(index, amplitude)``. Whatever the model-based code computes with it can be compared with
the closed forms: the exact density, the exact parameter posterior, kriging.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from rho_workflow.data.synthetic import field_spec
from rho_workflow.data.synthetic.random_fields import BOX_SIZE_MPC, K_PIVOT, wavenumber_grid
from rho_workflow.data.transforms import Identity
from rho_workflow.diffusion.reference import CirculantGaussianDenoiser
from rho_workflow.diffusion.schedules import make_schedule

__all__ = ["ExactGRFModel"]


class ExactGRFModel:
    """The exact conditional model of ``n x n`` Gaussian random fields (box of the synthetic sweeps)."""

    is_points, mask, device = False, None, "cpu"

    def __init__(self, n: int = 32, T: int = 1000, schedule: str = "cosine"):
        self.param_space = field_spec("gaussian-field", n).param_space()
        self.field_shape = (1, n, n)
        self.transform = Identity()
        self.schedule = make_schedule(schedule, T=T)
        self.metadata: dict = {}
        k = wavenumber_grid(n, BOX_SIZE_MPC, 2)
        k[0, 0] = 2 * math.pi / BOX_SIZE_MPC  # the mean mode has the fundamental's variance
        self.k = torch.as_tensor(k)
        self.cell_area = (BOX_SIZE_MPC / n) ** 2
        self._denoiser = CirculantGaussianDenoiser(self.eigenvalues, 2)

    def eigenvalues(self, cond: torch.Tensor) -> torch.Tensor:
        """Covariance eigenvalues ``P(|k|) / dV`` (FFT order) for rows ``(index, amplitude)`` of ``cond``."""
        index, amp = cond[:, 0, None, None].double(), cond[:, 1, None, None].double()
        return amp * (self.k / K_PIVOT) ** index / self.cell_area

    def exact_log_likelihood(self, field: np.ndarray, index: np.ndarray, amplitude: np.ndarray) -> np.ndarray:
        """Exact ``log p(field | index_i, amplitude_j)`` in nats on the grid ``index x amplitude``."""
        k = self.k.numpy().reshape(-1)
        power = (np.abs(np.fft.fft2(np.asarray(field, dtype=np.float64).reshape(self.field_shape[1:]))) ** 2).reshape(-1)
        n_cells = power.size
        amp = np.asarray(amplitude, dtype=np.float64)
        out = np.empty((len(index), len(amp)))
        for i, ind in enumerate(np.asarray(index, dtype=np.float64)):  # one row at a time keeps memory small
            lam = amp[:, None] * (k / K_PIVOT) ** ind / self.cell_area
            out[i] = -0.5 * (power / (n_cells * lam) + np.log(2 * np.pi * lam)).sum(-1)
        return out

    def _denoiser_for_sampling(self) -> CirculantGaussianDenoiser:
        return self._denoiser
