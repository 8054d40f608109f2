"""The training loop: AdamW with warm-up, gradient clipping, EMA, mixed precision, resume.

Every random draw of step ``k`` (minibatch indices, noise levels, noise) comes from a
generator seeded with ``(seed, k)`` and is drawn for the *global* batch, so

* resuming from a checkpoint at step ``k`` continues exactly as an uninterrupted run, and
* a data-parallel run on ``W`` ranks (``torch.distributed`` initialized by the caller) sees
  the same global batch as one process: rank ``r`` takes rows ``r::W`` of it, DDP averages
  the gradients, and the loss trajectory matches the single-process run up to float
  reduction order (condition dropout, drawn from each rank's global RNG, is the exception).

Rank 0 alone writes checkpoints and shows progress.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from pydantic import Field, model_validator

import torch
import torch.distributed as dist
from torch import nn

from rho_workflow.diffusion.losses import denoising_loss, resolution_noise_shift, sample_training_sigmas
from rho_workflow.diffusion.precond import Denoiser
from rho_workflow.diffusion.random import derive_seed
from rho_workflow.errors import RunInterrupted
from rho_workflow.sections import Section, validate_section
from rho_workflow.training.runtime import all_agree, bf16_autocast, compile_failure
from rho_workflow.training.validation import ValidationRecord, _Validator

__all__ = ["TrainConfig", "EMA", "TrainResult", "ValidationRecord", "train", "resolve_device", "power_ema_gamma"]


class TrainConfig(Section):
    """Options of :func:`train` (every field is recorded in the checkpoint)."""

    steps: int = Field(2000, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(2e-4, gt=0)
    weight_decay: float = 0.0
    warmup_steps: int = 100
    #: "cosine" decays to lr * min_lr_ratio at the last step
    lr_decay: Literal["constant", "cosine"] = "cosine"
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    ema_decay: float = Field(0.999, ge=0.0, lt=1.0)
    #: "exponential": fixed ``ema_decay``; "power": the power-function profile of EDM2
    #: (Karras et al. 2024), whose averaging length grows with training: relative standard
    #: deviation ``ema_std`` of the averaged weights over the steps so far
    ema: Literal["exponential", "power"] = "exponential"
    ema_std: float = Field(0.10, gt=0.0, lt=0.289)
    weighting: Literal["plain", "min-snr"] = "plain"
    min_snr_gamma: float = 5.0
    #: "mixture": half the draws from each (bench/time_to_quality.py, 3D harmonics)
    sigma_sampling: Literal["schedule", "lognormal", "mixture"] = "schedule"
    #: factor on the training noise levels; "auto": resolution_noise_shift (3D fields:
    #: sqrt(values per field / 256), 4 at 16^3 and 11.3 at 32^3; 1D and 2D fields: 1)
    noise_shift: float | Literal["auto"] = "auto"
    #: "interpolated": the lowest levels unshifted, the factor reached at the highest
    #: (sample_training_sigmas), so the sampler's last levels are trained too
    #: (bench/time_to_quality, 32^3 harmonics: 7.3% median L2 error after 26 CPU-minutes,
    #: 9.1% with "constant": every level times the factor)
    noise_shift_profile: Literal["constant", "interpolated"] = "interpolated"
    #: "auto" is bf16 autocast on CUDA
    mixed_precision: Literal["auto", "bf16", "no"] = "auto"
    compile: bool = False
    seed: int = 0
    device: str = "auto"
    log_every: int = 50
    checkpoint_every: int = 500
    #: symmetries of the data's distribution to augment with (:mod:`rho_workflow.training.augment`):
    #: "roll" (periodic box), "flip", "transpose" (isotropic); declare only those the data has
    augment: list[Literal["roll", "flip", "transpose"]] = Field(default_factory=list)
    #: every this many steps (0: never), the denoising loss of the EMA weights on the validation
    #: fields, at fixed noise draws (the same at every evaluation, so values compare)
    validate_every: int = Field(0, ge=0)
    #: noise draws per validation field
    validation_draws: int = Field(16, ge=1)
    #: "best": the EMA weights of the evaluation with the lowest validation loss are the
    #: model's (they stop memorization of a small sweep); "last": those of the last step
    keep: Literal["last", "best"] = "last"
    #: stop after this many evaluations without a lower validation loss (0: run all steps)
    patience: int = Field(0, ge=0)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None, path: str = "training") -> "TrainConfig":
        """Validate training options; raise :class:`ConfigError` listing every problem."""
        return validate_section(cls, d, path)

    @model_validator(mode="after")
    def _validation_options(self) -> "TrainConfig":
        if (self.keep == "best" or self.patience) and not self.validate_every:
            raise ValueError("{path}.validate_every: keep 'best' and patience choose by the validation "
                             "loss, which is computed every validate_every steps; fix: set "
                             "{path}.validate_every (e.g. steps / 20)")
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    def resolved_noise_shift(self, field_shape: tuple[int, ...]) -> float:
        """The factor on the training noise levels for fields of shape ``(C, *spatial)``."""
        if self.noise_shift == "auto":
            return resolution_noise_shift(field_shape[1:]) if len(field_shape) > 1 else 1.0
        if not (math.isfinite(self.noise_shift) and self.noise_shift > 0):
            raise ValueError(f"training.noise_shift {self.noise_shift}: must be 'auto' or a finite factor > 0")
        return float(self.noise_shift)


def power_ema_gamma(std: float) -> float:
    """The exponent ``gamma`` of the EDM2 power-function EMA with relative standard deviation
    ``std`` (Karras et al. 2024, eq. 3: ``std**2 = (g + 1) / ((g + 2)**2 (g + 3))``, 1/12 at
    ``g = 0`` and decreasing beyond; 0.05 -> 16.97, 0.10 -> 6.94), by Brent's method on ``g >= 0``."""
    from scipy.optimize import brentq

    if not 0.0 < std < 12 ** -0.5:
        raise ValueError(f"ema_std {std}: the power EMA's relative standard deviation must be in (0, 0.289)")
    return float(brentq(lambda g: (g + 1) / ((g + 2) ** 2 * (g + 3)) - std ** 2, 0.0, 1e7, xtol=1e-12))


class EMA:
    """Moving average of weights.

    ``exponential``: decay ``min(decay, (1 + k) / (10 + k))`` at step ``k`` (the usual warm-up,
    so early averages are not stuck at init). ``power`` (EDM2, Karras et al. 2024): decay
    ``(1 - 1 / t) ** (gamma + 1)`` with ``t = k + 1``, an average of all steps so far with
    weights growing as ``t ** gamma``, whose width is a fixed fraction ``std`` of the training
    length however long that is (:func:`power_ema_gamma`)."""

    def __init__(self, model: nn.Module, decay: float, kind: str = "exponential", std: float = 0.10):
        if kind not in ("exponential", "power"):
            raise ValueError(f"ema {kind!r}: must be 'exponential' or 'power'")
        self.decay, self.kind = decay, kind
        self.gamma = power_ema_gamma(std) if kind == "power" else None
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        if self.kind == "power":
            d = (1.0 - 1.0 / (step + 1)) ** (self.gamma + 1)
        else:
            d = min(self.decay, (1 + step) / (10 + step))
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(d).add_(v.detach().float(), alpha=1 - d)
            else:
                self.shadow[k].copy_(v)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.shadow = {k: v.clone().float() for k, v in state.items()}


@dataclass
class TrainResult:
    """What :func:`train` returns: the step reached, the loss history and timing; with
    ``validate_every``, the validation record (:class:`ValidationRecord`) and the EMA weights
    of its best evaluation (``best_ema``)."""

    step: int
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    samples_per_second: float = 0.0
    validation: "ValidationRecord | None" = None
    best_ema: dict[str, torch.Tensor] | None = None


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> the local CUDA device if there is one (the rank's, under DDP), else CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            index = dist.get_rank() % torch.cuda.device_count() if dist.is_initialized() else 0
            return torch.device("cuda", index)
        return torch.device("cpu")
    return torch.device(name)


def _lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then constant or cosine decay to ``min_lr_ratio``."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.lr_decay == "constant":
        return 1.0
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _prepare(denoiser: nn.Module, cfg: TrainConfig, state: dict | None, device: torch.device,
             world: int) -> tuple[nn.Module, nn.Module, "EMA", torch.optim.Optimizer]:
    """The model to call (DDP- or compile-wrapped network under the same preconditioning), the
    bare network, its EMA and the optimizer, each restored from ``state`` when resuming."""
    denoiser.to(device).train()
    net = denoiser.net
    if state is not None:
        net.load_state_dict(state["model"])
    ema = EMA(net, cfg.ema_decay, cfg.ema, cfg.ema_std)
    if state is not None and state.get("ema") is not None:
        ema.load_state_dict(state["ema"])
    model = denoiser
    if world > 1 or cfg.compile:  # same preconditioning around a wrapped network
        wrapped: nn.Module = net
        if world > 1:
            # find_unused_parameters: the null-condition embedding gets no gradient in a step
            # whose local batch drops no condition (always so with p_uncond = 0)
            wrapped = nn.parallel.DistributedDataParallel(
                net, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=True)
        if cfg.compile:
            wrapped = torch.compile(wrapped)
        model = Denoiser(wrapped, prediction=denoiser.prediction, sigma_data=denoiser.sigma_data)
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if state is not None and state.get("optimizer") is not None:
        optimizer.load_state_dict(state["optimizer"])
    return model, net, ema, optimizer


def _step(model: nn.Module, net: nn.Module, optimizer: torch.optim.Optimizer, ema: "EMA",
          schedule: Any, cfg: TrainConfig, step: int, use_bf16: bool, batch: tuple,
          mask: torch.Tensor | None) -> float:
    """One optimizer step on ``batch = (x0, cond, sigma, noise)``; returns the loss."""
    x0, c, sigma, noise = batch
    for group in optimizer.param_groups:
        group["lr"] = cfg.lr * _lr_factor(step, cfg)
    with torch.autocast(x0.device.type, dtype=torch.bfloat16, enabled=use_bf16):
        loss = denoising_loss(model, x0, c, schedule,
                              weighting=cfg.weighting, gamma=cfg.min_snr_gamma, mask=mask,
                              sigma=sigma, noise=noise)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip > 0:
        nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
    optimizer.step()
    ema.update(net, step)
    loss_value = float(loss.detach())
    if not math.isfinite(loss_value):
        raise FloatingPointError(
            f"training loss became {loss_value} at step {step}; lower training.lr or check "
            "the normalized data for extreme values")
    return loss_value


def train(denoiser: nn.Module, schedule, fields_: torch.Tensor, cond: torch.Tensor | None,
          cfg: TrainConfig, *, mask: torch.Tensor | None = None, state: dict | None = None,
          on_checkpoint: Callable[[dict], None] | None = None,
          on_log: Callable[[int, float], None] | None = None, progress: bool = True,
          should_stop: Callable[[], bool] | None = None,
          validation: tuple[torch.Tensor, torch.Tensor | None] | None = None) -> tuple[TrainResult, EMA]:
    """Minimize the weighted denoising loss ``E[lambda(sigma) ||D(x0 + sigma n, sigma) - x0||^2]``.

    Parameters
    ----------
    denoiser : nn.Module
        A :class:`~rho_workflow.diffusion.precond.Denoiser` (``prediction`` and ``sigma_data``
        define the loss weight of ``cfg.weighting``).
    schedule : NoiseSchedule
        Source of the training noise levels (``cfg.sigma_sampling``, times
        ``cfg.noise_shift``: by default larger for larger fields, see
        :func:`~rho_workflow.diffusion.losses.resolution_noise_shift`).
    fields_ : Tensor (N, C, *spatial)
        Normalized training fields, moved by ``cfg.augment`` (:mod:`~rho_workflow.training.augment`).
    cond : Tensor (N, P) float64 or None
        Parameter values of each field (``ParamSpace.to_array``); None trains unconditionally.
    mask : Tensor, optional
        Boolean, broadcastable to one field; False marks points (land) the loss ignores.
    state : dict, optional
        ``{"step", "model", "ema", "optimizer"}`` to resume from (a loaded checkpoint), with
        ``"validation"`` (:meth:`ValidationRecord.to_dict`) and ``"best_ema"`` when validating.
    on_checkpoint : callable, optional
        Called on rank 0 every ``cfg.checkpoint_every`` steps and at the end with the state
        (the keys of ``state``).
    should_stop : callable, optional
        Asked after every step (on every rank: they stop together when any sees True); then
        the state is checkpointed and :class:`~rho_workflow.errors.RunInterrupted` is raised.
    validation : (Tensor (M, C, *spatial), Tensor (M, P) or None), optional
        Normalized fields of runs not trained on and their parameters: with
        ``cfg.validate_every`` their loss is recorded (``result.validation``), ``keep="best"``
        returns the EMA weights of the lowest one in ``result.best_ema``, and ``patience``
        stops training when it has not fallen for that many evaluations.
    """
    from rho_workflow.errors import ConfigError
    from rho_workflow.training.augment import augment_batch, check_augment

    device = resolve_device(cfg.device)
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    if cfg.batch_size % world:
        raise ValueError(f"training.batch_size {cfg.batch_size} must be divisible by the number of ranks ({world})")
    problems = check_augment(cfg.augment, tuple(fields_.shape[2:]), mask is not None)
    if cfg.validate_every and (validation is None or len(validation[0]) == 0):
        problems.append("training.validate_every: there are no validation fields to compute the loss "
                        "on; fix: keep runs for validation (data.split.validation > 0) or set "
                        "training.validate_every: 0")
    if problems:
        raise ConfigError(problems)
    model, net, ema, optimizer = _prepare(denoiser, cfg, state, device, world)
    use_bf16 = bf16_autocast(cfg.mixed_precision, device)  # warns where bf16 is slow (CPU without AVX-512 BF16)

    fields_, mask = fields_.to(device), None if mask is None else mask.to(device)
    cond = None if cond is None else cond.to(device, torch.float64)
    n, local = fields_.shape[0], slice(rank * (cfg.batch_size // world),
                                        (rank + 1) * (cfg.batch_size // world))
    shift = cfg.resolved_noise_shift(tuple(fields_.shape[1:]))
    start = 0 if state is None else int(state["step"])
    result = TrainResult(step=start)
    validator, record, best = None, None, None
    if cfg.validate_every:
        vx, vc = validation
        validator = _Validator(denoiser, schedule, cfg, vx.to(device, torch.float32),
                               None if vc is None else vc.to(device, torch.float64), mask, shift)
        record = ValidationRecord.from_dict((state or {}).get("validation"))
        best = (state or {}).get("best_ema")
        result.validation = record
    end = cfg.steps if record is None or record.stopped_at is None else start
    bar = _progress_bar(cfg.steps, start, enabled=progress and rank == 0)
    t0 = time.perf_counter()
    for step in range(start, end):
        g = torch.Generator().manual_seed(derive_seed(cfg.seed, "train-step", step))
        torch.manual_seed(derive_seed(cfg.seed, ["dropout", rank], step))
        batch = torch.randint(n, (cfg.batch_size,), generator=g)
        idx = batch[local]
        sigma = sample_training_sigmas(schedule, cfg.batch_size, g, how=cfg.sigma_sampling,
                                       shift=shift, profile=cfg.noise_shift_profile)[local]
        noise = torch.randn((cfg.batch_size, *fields_.shape[1:]), generator=g)[local]
        if cfg.augment:  # moves drawn for the global batch from their own generator: resumable, DDP-exact
            moves = torch.Generator().manual_seed(derive_seed(cfg.seed, "augment", step))
            x0 = augment_batch(fields_[batch] if world > 1 else fields_[idx], cfg.augment, moves)[local]
        else:
            x0 = fields_[idx]
        try:
            loss_value = _step(model, net, optimizer, ema, schedule, cfg, step, use_bf16,
                               (x0, None if cond is None else cond[idx], sigma, noise), mask)
        except Exception as err:  # torch.compile compiles on the first call: say so in one message
            failure = compile_failure(err) if cfg.compile and step == start else None
            if failure is None:
                raise
            raise failure from err
        result.losses.append(loss_value)
        result.step = step + 1
        bar.update(1)
        if rank == 0 and on_log is not None and (step % cfg.log_every == 0 or step + 1 == cfg.steps):
            on_log(step, loss_value)
        early = False
        if validator is not None and ((step + 1) % cfg.validate_every == 0 or step + 1 == cfg.steps):
            loss = validator.loss(ema)
            record.history.append([step + 1, loss])
            if record.best_loss is None or loss < record.best_loss:
                record.best_step, record.best_loss = step + 1, loss
                best = {k: v.detach().clone() for k, v in ema.state_dict().items()}
            early = bool(cfg.patience) and record.since_best() >= cfg.patience and step + 1 < cfg.steps
            if early:
                record.stopped_at = step + 1
        stop = should_stop is not None and step + 1 < cfg.steps and all_agree(should_stop(), world, device)
        if rank == 0 and on_checkpoint is not None and (stop or early or (
                (cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0) or step + 1 == cfg.steps)):
            on_checkpoint({"step": step + 1, "model": net.state_dict(), "ema": ema.state_dict(),
                           "optimizer": optimizer.state_dict(),
                           "validation": None if record is None else record.to_dict(), "best_ema": best})
        if stop:
            bar.close()
            raise RunInterrupted(f"training stopped on request at step {step + 1} of "
                                 f"{cfg.steps}; the checkpoint holds that step", step=step + 1)
        if early:
            break
    bar.close()
    result.best_ema = best
    result.seconds = time.perf_counter() - t0
    result.samples_per_second = (result.step - start) * cfg.batch_size / max(result.seconds, 1e-12)
    return result, ema


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, initial: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="step", mininterval=2.0)
