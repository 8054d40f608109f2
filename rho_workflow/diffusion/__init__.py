"""Modelling core of the diffusion layer on plain tensors (see docs/contracts.md).

Schedules (:mod:`.schedules`), the preconditioned denoiser (:mod:`.precond`), losses
(:mod:`.losses`), samplers (:mod:`.samplers`), per-sample randomness (:mod:`.random`),
likelihoods (:mod:`.likelihood`: the bound K; :mod:`.flow_likelihood`: the probability-flow
ODE) and the binomial diffusion of binary data (:mod:`.binomial`).
"""

from rho_workflow.diffusion.flow_likelihood import ODEIntegrationError, ode_log_prob
from rho_workflow.diffusion.likelihood import (BoundResult, EntropyDiagnostics, LogProb,
                                               gaussian_entropy_diagnostics, log_prob, null_log_prob,
                                               variational_bound)
from rho_workflow.diffusion.losses import denoising_loss, loss_weight, sample_training_sigmas
from rho_workflow.diffusion.precond import Denoiser, GuidedDenoiser, guided
from rho_workflow.diffusion.random import BatchGenerator, derive_seed
from rho_workflow.diffusion.samplers import (SAMPLERS, get_sampler, nfe, prior, sample_ddim, sample_ddpm,
                                             sample_dpmpp_2m, sample_dpmpp_3m, sample_heun, sample_unipc,
                                             sample_unipc_bh1)
from rho_workflow.diffusion.schedules import NoiseSchedule, make_schedule, sampling_sigmas

__all__ = [
    "NoiseSchedule", "make_schedule", "sampling_sigmas",
    "Denoiser", "GuidedDenoiser", "guided",
    "loss_weight", "sample_training_sigmas", "denoising_loss",
    "sample_ddpm", "sample_ddim", "sample_dpmpp_2m", "sample_dpmpp_3m", "sample_heun", "sample_unipc",
    "sample_unipc_bh1", "SAMPLERS", "get_sampler", "nfe", "prior",
    "BatchGenerator", "derive_seed",
    "log_prob", "variational_bound", "ode_log_prob", "null_log_prob", "gaussian_entropy_diagnostics",
    "LogProb", "BoundResult", "EntropyDiagnostics", "ODEIntegrationError",
]
