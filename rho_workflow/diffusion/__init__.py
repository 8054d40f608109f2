"""Modelling core of the diffusion layer on plain tensors (see docs/contracts.md).

Schedules (:mod:`.schedules`), the preconditioned denoiser (:mod:`.precond`), losses
(:mod:`.losses`), samplers (:mod:`.samplers`) and per-sample randomness (:mod:`.random`).
"""

from rho_workflow.diffusion.losses import denoising_loss, loss_weight, sample_training_sigmas
from rho_workflow.diffusion.precond import Denoiser, GuidedDenoiser, guided
from rho_workflow.diffusion.random import BatchGenerator, derive_seed
from rho_workflow.diffusion.samplers import (SAMPLERS, get_sampler, nfe, prior, sample_ddim, sample_ddpm,
                                             sample_dpmpp_2m, sample_dpmpp_3m, sample_heun)
from rho_workflow.diffusion.schedules import NoiseSchedule, make_schedule, sampling_sigmas

__all__ = [
    "NoiseSchedule", "make_schedule", "sampling_sigmas",
    "Denoiser", "GuidedDenoiser", "guided",
    "loss_weight", "sample_training_sigmas", "denoising_loss",
    "sample_ddpm", "sample_ddim", "sample_dpmpp_2m", "sample_dpmpp_3m", "sample_heun", "SAMPLERS", "get_sampler", "nfe", "prior",
    "BatchGenerator", "derive_seed",
]
