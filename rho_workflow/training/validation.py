"""Model selection on the validation runs: the denoising loss of the EMA weights at fixed draws.

:class:`ValidationRecord` is what a checkpoint keeps of it (history, best evaluation, early
stop); :class:`_Validator` computes it for :func:`rho_workflow.training.trainer.train`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch

from rho_workflow.diffusion.losses import denoising_loss, sample_training_sigmas
from rho_workflow.diffusion.precond import Denoiser
from rho_workflow.diffusion.random import derive_seed

__all__ = ["ValidationRecord"]


@dataclass
class ValidationRecord:
    """The validation losses so far: ``history`` of ``[step, loss]``, the best evaluation and,
    after an early stop, the step it stopped at (a resumed run does not train on)."""

    history: list[list[float]] = field(default_factory=list)
    best_step: int | None = None
    best_loss: float | None = None
    stopped_at: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"history": [list(h) for h in self.history], "best_step": self.best_step,
                "best_loss": self.best_loss, "stopped_at": self.stopped_at}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "ValidationRecord":
        d = d or {}
        return cls(history=[[int(a), float(b)] for a, b in d.get("history", [])],
                   best_step=d.get("best_step"), best_loss=d.get("best_loss"),
                   stopped_at=d.get("stopped_at"))

    def since_best(self) -> int:
        """Evaluations after the best one."""
        steps = [int(h[0]) for h in self.history]
        return len(steps) - 1 - steps.index(self.best_step) if self.best_step in steps else len(steps)


class _Validator:
    """The denoising loss of the EMA weights on fixed validation draws.

    Each validation field is seen at ``cfg.validation_draws`` noise levels and noises drawn
    from the training distribution (``cfg.sigma_sampling`` times the noise shift) by a
    generator of ``(cfg.seed, "validation", chunk)``: the same draws at every evaluation, so
    that differences between evaluations are the weights' and not the draws'. The loss is the
    training objective (``cfg.weighting``, the mask) in float32, in chunks of 64 rows.
    """

    def __init__(self, denoiser: Denoiser, schedule: Any, cfg: Any, fields_: torch.Tensor,
                 cond: torch.Tensor | None, mask: torch.Tensor | None, shift: float):
        self.schedule, self.cfg, self.mask, self.shift = schedule, cfg, mask, shift
        device = fields_.device
        self.x = fields_.repeat_interleave(cfg.validation_draws, 0)
        self.c = None if cond is None else cond.repeat_interleave(cfg.validation_draws, 0)
        self.net = copy.deepcopy(denoiser.net).eval()
        self.denoiser = Denoiser(self.net, prediction=denoiser.prediction, sigma_data=denoiser.sigma_data)
        self.device = device

    @torch.no_grad()
    def loss(self, ema: Any) -> float:
        self.net.load_state_dict(ema.state_dict())
        total, n = 0.0, len(self.x)
        for k, s in enumerate(range(0, n, 64)):
            x = self.x[s:s + 64]
            g = torch.Generator().manual_seed(derive_seed(self.cfg.seed, "validation", k))
            sigma = sample_training_sigmas(self.schedule, len(x), g, how=self.cfg.sigma_sampling,
                                           shift=self.shift, profile=self.cfg.noise_shift_profile)
            noise = torch.randn(x.shape, generator=g)
            loss = denoising_loss(self.denoiser, x, None if self.c is None else self.c[s:s + 64],
                                  self.schedule, weighting=self.cfg.weighting, gamma=self.cfg.min_snr_gamma,
                                  mask=self.mask, sigma=sigma.to(self.device), noise=noise.to(self.device))
            total += float(loss) * len(x)
        return total / n
