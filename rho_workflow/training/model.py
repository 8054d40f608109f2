"""The trained-model object: create, fit, sample, save and load a conditional diffusion model.

The learning layer's model, used by the workflow's tasks (train, sample chunks) and wrapped
by the user-facing :class:`rho_workflow.api.RhoModel`. Fields go in and come out in physical
units; a transform (recorded in the checkpoint) normalizes them for the network. Each sample
is seeded on its own, so sample ``i`` at point ``p`` is the same field whatever the batch it
is computed in.
"""

from __future__ import annotations

import copy
import math
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from rho_workflow.data.transforms import Affine, Chain, Log, Transform, transform_from_dict
from rho_workflow.diffusion.posterior import observed
from rho_workflow.diffusion.precond import Denoiser, guided
from rho_workflow.diffusion.random import BatchGenerator, derive_seed
from rho_workflow.diffusion.samplers import DEFAULT_SAMPLER, DEFAULT_STEPS, SAMPLERS, default_spacing, sampler_spec
from rho_workflow.diffusion.schedules import make_schedule, sampling_sigmas
from rho_workflow.models import FeatureEncoder, build_network, fourier_aliasing
from rho_workflow.errors import RhoWorkflowError
from rho_workflow.params import ParamSpace
from rho_workflow.training.checkpoint import load_checkpoint, save_checkpoint
from rho_workflow.training.likelihood import FieldLogProb, field_log_prob
from rho_workflow.training.observe import prepare_observations
from rho_workflow.training.trainer import TrainConfig, TrainResult, resolve_device, train

__all__ = ["TrainedModel", "default_network", "DEFAULT_SAMPLER", "DEFAULT_SPACING"]

#: Re-exported from the sampler registry (rho_workflow.diffusion.samplers), where the facts live:
#: each sampler's own spacing, used when none is given and no fitted levels are stored for the
#: step count (:func:`~rho_workflow.diffusion.samplers.default_spacing`).
DEFAULT_SPACING = {name: spec.spacing for name, spec in SAMPLERS.items()}


class SampleRequestError(RhoWorkflowError, ValueError):
    """A sampling request breaks a rule (the count, the points, the seeds)."""


#: 3D grids with every side at least this long get the patched default network
PATCHED_3D_SIDE = 32


def default_network(field_shape: Sequence[int], channels: int = 1) -> dict[str, Any]:
    """A network config sized for CPU training: a U-Net for 1D/2D/3D fields, an MLP for
    points (``field_shape`` of length 1 with ``channels == 0`` means point data). 3D grids of
    ``PATCHED_3D_SIDE`` cells a side or more: the U-Net on 2^3-cell patches (``patch_size``)."""
    dims = len(field_shape)
    if dims not in (1, 2, 3):
        raise ValueError(f"field_shape {tuple(field_shape)}: fields must be 1D, 2D or 3D")
    unet = {"kind": "unet", "dims": dims, "in_channels": channels, "base_channels": 32,
            "channel_mults": [1, 2, 2], "num_res_blocks": 1, "attention_levels": []}
    if dims == 3 and min(field_shape) >= PATCHED_3D_SIDE:
        # on 2^3-cell patches: about 2.5x fewer CPU seconds a step than 16 channels on cells,
        # and a lower error after 30 CPU-minutes (bench/time_to_quality.py)
        return {**unet, "patch_size": 2}
    if dims == 3:
        return {**unet, "base_channels": 16}
    return unet


class TrainedModel:
    """A conditional diffusion model of a scalar (or multi-channel) field on a fixed grid.

    Build one with :meth:`create` (or :meth:`load`); the constructor takes the resolved
    config (the JSON that the checkpoint stores).
    """

    def __init__(self, config: Mapping[str, Any], device: str = "auto"):
        self.config = copy.deepcopy(dict(config))
        self.param_space = ParamSpace.from_dict(self.config["param_space"])
        self.field_shape = tuple(self.config["field_shape"])  # (C, *spatial), or (D,) for points
        self.is_points = self.config["network"].get("kind") == "mlp"
        self.transform: Transform = transform_from_dict(self.config["transform"])
        diff = self.config["diffusion"]
        self.schedule = make_schedule(diff["schedule"], T=diff["T"])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.config.get("init_seed", 0)))  # reproducible initial weights
            net = build_network(self.config["network"], self.param_space)
        self.denoiser = Denoiser(net, prediction=diff["prediction"], sigma_data=diff["sigma_data"])
        self.ema_state: dict[str, torch.Tensor] | None = None
        self._running_ema: dict[str, torch.Tensor] | None = None
        #: the validation record of training (ValidationRecord.to_dict()), when it validated
        self.validation: dict[str, Any] | None = None
        self.step = 0
        self.mask = None if self.config.get("mask") is None else torch.tensor(self.config["mask"], dtype=torch.bool)
        self.device = resolve_device(device)
        self._sampling_denoiser: Denoiser | None = None

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def create(cls, field_shape: Sequence[int], param_space: ParamSpace, *, channels: int = 1,
               encoder: str = "features", prediction: str = "v", schedule: str = "cosine",
               T: int = 1000, network: Mapping[str, Any] | None = None, p_uncond: float = 0.1,
               metadata: Mapping[str, Any] | None = None, init_seed: int = 0,
               device: str = "auto") -> "TrainedModel":
        """A new, untrained model of fields of spatial shape ``field_shape``.

        Parameters
        ----------
        encoder : {"features", "hash", "none"}
            ``features`` (continuous Fourier features, interpolates between parameter values)
            or ``hash`` (the rho-Diffusion SHA-512 code of the parameter dict, faithful to
            Cai & Lee; cannot interpolate).
        prediction : {"v", "eps", "x0"}
            What the network predicts inside the preconditioned denoiser.
        """
        net_cfg = dict(network or default_network(field_shape, channels))
        points = net_cfg.get("kind") == "mlp"  # point data: samples are vectors, no channel axis
        if points:
            net_cfg.setdefault("dim", int(np.prod(field_shape)))
            if len(field_shape) != 1 or net_cfg["dim"] != field_shape[0]:
                raise ValueError(f"an MLP models points: field_shape must be (D,) with D = network dim, "
                                 f"got field_shape={tuple(field_shape)} and dim={net_cfg['dim']}")
        else:
            net_cfg.setdefault("in_channels", channels)
        net_cfg["condition"] = {"kind": encoder if len(param_space) else "none", "p_uncond": p_uncond,
                                **dict(net_cfg.get("condition", {}))}
        config = {
            "field_shape": list(field_shape) if points else [channels, *field_shape],
            "param_space": param_space.to_dict(),
            "transform": {"kind": "identity"},
            "network": net_cfg,
            "diffusion": {"schedule": schedule, "T": T, "prediction": prediction, "sigma_data": 1.0},
            "training": None,
            "init_seed": int(init_seed),
            "mask": None,
            "metadata": dict(metadata or {}),
        }
        return cls(config, device=device)

    def set_normalization(self, transform: Transform | Mapping[str, Any],
                          mask: np.ndarray | None = None) -> None:
        """Record how physical fields map to the network's normalized fields (and the fixed
        missing-value mask, True = valid point), for data normalized elsewhere (a training store)."""
        self.transform = transform if isinstance(transform, Transform) else transform_from_dict(transform)
        self.config["transform"] = self.transform.to_dict()
        if mask is None:
            self.config["mask"], self.mask = None, None
        else:
            valid = np.asarray(mask, dtype=bool)
            if valid.shape != tuple(self.field_shape[1:]):
                raise ValueError(f"mask has shape {valid.shape}; expected the spatial shape {tuple(self.field_shape[1:])}")
            self.config["mask"], self.mask = valid.tolist(), torch.from_numpy(valid.copy())

    @property
    def metadata(self) -> dict[str, Any]:
        """Free-form JSON stored in the checkpoint (field name, units, grid, pipeline)."""
        return self.config["metadata"]

    @property
    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.denoiser.net.parameters())

    # -- training -------------------------------------------------------------------------------
    def fit(self, fields: np.ndarray, params: Sequence[Mapping[str, Any]], *,
            transform: str | Transform = "standardize", mask: np.ndarray | None = None,
            validation: tuple[np.ndarray, Sequence[Mapping[str, Any]]] | None = None,
            **train_options: Any) -> TrainResult:
        """Fit to ``fields`` (physical units, shape ``(N, *spatial)`` or ``(N, C, *spatial)``).

        ``transform`` is ``"standardize"`` (per-channel mean/std), ``"log-standardize"`` (log,
        then standardize; for positive densities) or a :class:`Transform`. ``mask`` (spatial
        shape, True = valid) marks fixed missing points such as land; they are ignored by the
        loss and come back as NaN. ``validation`` is ``(fields, params)`` of runs kept out of
        training, for ``validate_every`` / ``keep="best"`` / ``patience``. Other keywords are
        :class:`TrainConfig` fields.
        """
        x = self._check_fields(np.asarray(fields), mask)
        valid = np.broadcast_to(mask, x.shape[2:]) if mask is not None else None
        if isinstance(transform, str):
            transform = self._fit_transform(transform, x, valid)
        self.set_normalization(transform, valid)

        def normalized(a: np.ndarray) -> np.ndarray:
            z = transform.forward(a)
            return (z if valid is None else np.where(valid, z, 0.0)).astype(np.float32)

        if validation is not None:
            validation = (normalized(self._check_fields(np.asarray(validation[0]), mask)), validation[1])
        return self.fit_normalized(normalized(x), params, validation=validation, **train_options)

    def fit_normalized(self, fields: np.ndarray, params: Sequence[Mapping[str, Any]], *,
                       checkpoint_path: str | Path | None = None, resume: bool = False,
                       progress: bool = True, on_log=None, should_stop=None,
                       validation: tuple[np.ndarray, Sequence[Mapping[str, Any]]] | None = None,
                       **train_options: Any) -> TrainResult:
        """Fit to fields already normalized by ``self.transform`` (shape ``(N, C, *spatial)``);
        ``should_stop()`` returning True checkpoints and stops (see :func:`train`).

        ``validation`` is ``(fields, params)`` of runs not trained on (normalized likewise):
        with ``validate_every`` their denoising loss is recorded in the checkpoint, and with
        ``keep="best"`` the model keeps the EMA weights of the lowest one.
        """
        x = torch.as_tensor(np.asarray(fields, dtype=np.float32))
        if tuple(x.shape[1:]) != self.field_shape:
            raise ValueError(f"normalized fields have shape {tuple(x.shape[1:])} per sample; the model "
                             f"expects (C, *spatial) = {self.field_shape}")
        if len(params) != x.shape[0]:
            raise ValueError(f"{x.shape[0]} fields but {len(params)} parameter points; give one point per field")
        cond = torch.from_numpy(self.param_space.to_array(list(params))) if len(self.param_space) else None
        if cond is not None:
            self._warn_if_design_aliases(cond.numpy())
        val = None
        if validation is not None and len(validation[0]):
            vx = torch.as_tensor(np.asarray(validation[0], dtype=np.float32))
            if tuple(vx.shape[1:]) != self.field_shape or len(validation[1]) != len(vx):
                raise ValueError(f"validation fields have shape {tuple(vx.shape)} with {len(validation[1])} "
                                 f"points; expected (M, *{self.field_shape}) and one point per field")
            vc = (torch.from_numpy(self.param_space.to_array(list(validation[1]), allow_extrapolation=True))
                  if len(self.param_space) else None)
            val = (vx, vc)
        sd = float(x.std()) if self.mask is None else float(x[:, :, self.mask].std())
        self.config["diffusion"]["sigma_data"] = sd
        self.denoiser.sigma_data = sd
        cfg = TrainConfig.from_dict({**(self.config.get("training") or {}), **train_options})
        self.config["training"] = cfg.to_dict()
        state = None
        if resume and checkpoint_path is not None and Path(checkpoint_path).exists():
            ckpt = load_checkpoint(checkpoint_path)
            trainer_state = ckpt.get("trainer_state") or {}
            running = trainer_state.get("running_ema")
            state = {"step": trainer_state["step"], "model": ckpt["model_state"],
                     "ema": running if running is not None else ckpt["ema_state"],
                     "optimizer": ckpt["optimizer_state"], "validation": trainer_state.get("validation"),
                     "best_ema": ckpt["ema_state"] if running is not None else None}

        def on_checkpoint(s: dict) -> None:
            self._keep_state(s, cfg)
            if checkpoint_path is not None:
                self.save(checkpoint_path, optimizer_state=s["optimizer"])

        result, ema = train(self.denoiser, self.schedule, x, cond, cfg, mask=self.mask, state=state,
                            on_checkpoint=on_checkpoint, on_log=on_log, progress=progress,
                            should_stop=should_stop, validation=val)
        self._keep_state({"step": result.step, "ema": ema.state_dict(), "best_ema": result.best_ema,
                          "validation": None if result.validation is None else result.validation.to_dict()}, cfg)
        self._sampling_denoiser = None
        return result

    def _keep_state(self, s: Mapping[str, Any], cfg: TrainConfig) -> None:
        """The weights to sample with (the best validation EMA with ``keep="best"``, else the
        last EMA) and what a resume needs beside them (the running EMA, the validation record)."""
        self.step = int(s["step"])
        best = s.get("best_ema") if cfg.keep == "best" else None
        self.ema_state = {k: v.detach().clone() for k, v in (best if best is not None else s["ema"]).items()}
        self._running_ema = None if best is None else {k: v.detach().clone() for k, v in s["ema"].items()}
        self.validation = s.get("validation")

    def _warn_if_design_aliases(self, cond: np.ndarray) -> None:
        """Warn when the training values cannot pin down the feature encoder between them."""
        inner = getattr(getattr(self.denoiser.net, "cond_encoder", None), "inner", None)
        if isinstance(inner, FeatureEncoder):
            for problem in fourier_aliasing(self.param_space, cond, inner.n_frequencies):
                warnings.warn(f"feature encoder: {problem}; samples at values between training values "
                              "may not interpolate", stacklevel=3)

    # -- sampling -------------------------------------------------------------------------------
    def sample(self, params: Mapping[str, Any] | Sequence[Mapping[str, Any]], n: int = 1, *,
               seed: int = 0, **options: Any) -> np.ndarray:
        """``n`` fields at each parameter point, shape ``(P, n, C, *spatial)``, physical units.

        Sample ``i`` at point ``p`` uses the seed ``derive_seed(seed, p, i)``. Keywords are
        those of :meth:`sample_seeded`.
        """
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise SampleRequestError(f"sample: n={n!r} fields per point; the rule: n must be an "
                                     "integer >= 1; fix: pass n=1 or more")
        points = [params] if isinstance(params, Mapping) else list(params)
        flat = [pt for pt in points for _ in range(n)]
        seeds = [derive_seed(seed, dict(pt), i) for pt in points for i in range(n)]
        out = self.sample_seeded(flat, seeds, **options)
        return out.reshape(len(points), n, *out.shape[1:])

    @torch.no_grad()
    def sample_seeded(self, points: Sequence[Mapping[str, Any]], seeds: Sequence[int], *,
                      sampler: str = DEFAULT_SAMPLER, steps: int = DEFAULT_STEPS, guidance: float = 0.0,
                      spacing: str | None = None, batch_size: int = 64,
                      allow_extrapolation: bool = False, physical: bool = True,
                      observe: Any = None, cg_iters: int = 20, **sampler_options: Any) -> np.ndarray:
        """One field per (point, seed), shape ``(B, C, *spatial)``.

        ``sampler`` is one of ``ddpm``, ``ddim``, ``dpmpp_2m``, ``dpmpp_3m``, ``heun``, ``unipc``,
        ``unipc_bh1`` (default: ``unipc``, 12 steps); ``spacing`` that of its noise levels (when None:
        ``fitted``, the levels fitted on the exact Gaussian denoiser, where they are stored for the
        sampler and step count, else the sampler's own: :func:`~rho_workflow.diffusion.samplers.default_spacing`);
        ``steps`` the number of noise levels
        (``ddpm`` with ``steps == T`` is Ho et al.'s full chain); ``guidance`` the classifier-free
        guidance scale (0: the calibrated conditional density). Values come back
        in physical units (``physical=False``: normalized), NaN at masked points.

        ``observe`` conditions the fields on observations (one or a list): a
        :class:`~rho_workflow.data.observations.KnownRegion` (inpainting),
        :class:`~rho_workflow.data.observations.NoisyField` (denoising),
        :class:`~rho_workflow.data.observations.Stations` (point observations at grid
        coordinates), a netCDF path or xarray Dataset of those, or a callable ``log r(x)`` of
        the physical field. Linear Gaussian observations use the Tweedie moment projection
        (exact for Gaussian data; ``cg_iters`` conjugate-gradient steps per network call), a
        general ``log r`` the DPS approximation: :mod:`rho_workflow.diffusion.posterior`.
        """
        if len(points) != len(seeds):
            raise SampleRequestError(f"{len(points)} parameter points but {len(seeds)} seeds; "
                                     "give one seed per sample")
        if sampler not in SAMPLERS:
            raise SampleRequestError(f"sample: sampler={sampler!r} is not known; the rule: one of "
                                     f"{sorted(SAMPLERS)}; fix: pass one of them")
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
            raise SampleRequestError(f"sample: steps={steps!r}; the rule: the number of noise "
                                     "levels must be an integer >= 1; fix: pass steps=12 or so")
        dropout = (self.config["network"].get("condition") or {}).get("p_uncond", 0.1)
        if guidance and len(self.param_space) and not dropout:
            raise SampleRequestError(
                f"sample: guidance={guidance!r} needs the unconditional model, which this one never "
                "trained (it was trained with model.p_uncond 0: no condition dropout); fix: sample "
                "with guidance 0, or retrain with model.p_uncond > 0 (e.g. 0.1)")
        spec = sampler_spec(sampler)
        spacing = spacing or default_spacing(sampler, steps, self.schedule)
        for problem in spec.warnings(steps, spacing, self.schedule.name):
            warnings.warn(problem, stacklevel=2)
        sigmas = sampling_sigmas(self.schedule, steps, spacing=spacing, sampler=sampler)
        cond_all = (torch.from_numpy(self.param_space.to_array(list(points), allow_extrapolation))
                    if len(self.param_space) else None)
        lin_obs, log_r = prepare_observations(self, observe)
        denoiser = observed(guided(self._denoiser_for_sampling(), guidance), lin_obs, log_r, cg_iters=cg_iters)
        out = []
        for start in range(0, len(seeds), batch_size):
            gen = BatchGenerator(seeds[start:start + batch_size], device="cpu")
            x = gen.randn(self.field_shape, dtype=torch.float64) * math.sqrt(float(sigmas[0]) ** 2 + 1)
            cond = None if cond_all is None else cond_all[start:start + batch_size].to(self.device)
            x0 = spec.fn(denoiser, x.to(self.device), sigmas.to(self.device), cond=cond,
                           generator=gen, **sampler_options)
            out.append(x0.cpu().double().numpy())
        z = np.concatenate(out) if out else np.empty((0, *self.field_shape))
        if not physical:
            return z
        x = self.transform.inverse(z)
        if self.mask is not None:
            x = np.where(self.mask.numpy(), x, np.nan)
        return x

    # -- probabilities --------------------------------------------------------------------------
    def log_prob(self, fields: np.ndarray, params: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None,
                 *, method: str = "ode", unit: str = "nats", details: bool = False,
                 **options: Any) -> np.ndarray | FieldLogProb:
        """``log p(x | params)`` of physical fields, per field, in the user's data units.

        ``method`` is ``"ode"`` (exact, probability-flow ODE; Song et al. 2021 app. D) or
        ``"bound"`` (the bound K of Sohl-Dickstein et al. 2015 eq. 14, summed over all T
        steps); ``unit`` is ``nats``, ``bits`` or ``bits_per_dim``. The transform's
        log-Jacobian is included (:func:`rho_workflow.training.likelihood.field_log_prob`,
        whose keywords ``options`` are). ``details=True`` returns the full
        :class:`FieldLogProb` (standard errors, network calls, wall time, per-step KL terms).
        """
        result = field_log_prob(self, fields, params, method=method, unit=unit, **options)
        return result if details else result.values

    def infer(self, field: np.ndarray, prior: Mapping[str, Any] | None = None, *, method: str = "grid",
              likelihood: str = "bound", seed: int = 0, likelihood_options: Mapping[str, Any] | None = None,
              **options: Any) -> Any:
        """The posterior ``p(theta | field)`` of the physical parameters, as an xarray Dataset.

        :func:`rho_workflow.training.inference.infer_field`: ``method`` ``grid`` (up to 3
        continuous parameters) or ``mcmc`` (emcee); ``likelihood`` ``bound`` (stratified
        Monte-Carlo K with common random numbers) or ``ode``; ``prior`` per parameter.
        """
        from rho_workflow.training.inference import infer_field
        return infer_field(self, field, prior, method=method, likelihood=likelihood, seed=seed,
                           likelihood_options=likelihood_options, **options)

    def _denoiser_for_sampling(self) -> Denoiser:
        """The denoiser with EMA weights (if trained), in eval mode on ``self.device``."""
        if self._sampling_denoiser is None:
            d = copy.deepcopy(self.denoiser)
            if self.ema_state is not None:
                d.net.load_state_dict(self.ema_state)
            self._sampling_denoiser = d.to(self.device).eval()
        return self._sampling_denoiser

    # -- persistence ----------------------------------------------------------------------------
    def save(self, path: str | Path, optimizer_state: dict | None = None) -> Path:
        """Write weights, EMA weights, resolved config, parameter space, transform, metadata."""
        trainer_state: dict[str, Any] = {"step": self.step}
        if self.validation is not None:
            trainer_state["validation"] = self.validation
        if self._running_ema is not None:  # ema_state holds the best validation weights
            trainer_state["running_ema"] = self._running_ema
        return save_checkpoint(path, model_state=self.denoiser.net.state_dict(), config=self.config,
                               ema_state=self.ema_state, optimizer_state=optimizer_state,
                               trainer_state=trainer_state)

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> "TrainedModel":
        """Rebuild a model from a checkpoint (read with ``weights_only=True``)."""
        ckpt = load_checkpoint(path)
        model = cls(ckpt["config"], device=device)
        model.denoiser.net.load_state_dict(ckpt["model_state"])
        model.ema_state = ckpt["ema_state"]
        trainer_state = ckpt.get("trainer_state") or {}
        model.step = int(trainer_state.get("step", 0))
        model.validation = trainer_state.get("validation")
        model._running_ema = trainer_state.get("running_ema")
        return model

    # -- validation -----------------------------------------------------------------------------
    def _check_fields(self, x: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        if self.is_points:
            if x.ndim != 2 or x.shape[1:] != self.field_shape or mask is not None:
                raise ValueError(f"points have shape {x.shape}; expected (N, {self.field_shape[0]}) and no mask")
            if not np.isfinite(x).all():
                raise ValueError(f"training points contain {int((~np.isfinite(x)).sum())} NaN/inf values")
            return x.astype(np.float64)
        spatial = self.field_shape[1:]
        if x.ndim == len(spatial) + 1:
            x = x[:, None]
        if x.ndim != len(spatial) + 2 or tuple(x.shape[1:]) != self.field_shape:
            raise ValueError(f"fields have shape {x.shape}; expected (N, *spatial) = (N, {', '.join(map(str, spatial))}) "
                             f"or (N, C, *spatial) with C = {self.field_shape[0]}")
        x = x.astype(np.float64)
        valid = np.ones(spatial, bool) if mask is None else np.asarray(mask, bool)
        if valid.shape != tuple(spatial):
            raise ValueError(f"mask has shape {valid.shape}; expected the spatial shape {tuple(spatial)}")
        bad = ~np.isfinite(x) & valid
        if bad.any():
            n_idx = np.argwhere(bad)[0]
            raise ValueError(f"training fields contain {int(bad.sum())} NaN/inf values at unmasked points "
                             f"(first at sample {int(n_idx[0])}, index {tuple(int(i) for i in n_idx[2:])}); pass a mask for "
                             "fixed missing points, or clean the data")
        return x

    @staticmethod
    def _fit_transform(kind: str, x: np.ndarray, valid: np.ndarray | None) -> Transform:
        def affine(z: np.ndarray) -> Affine:
            pooled = z if valid is None else z[:, :, valid][..., None]
            return Affine.fit(pooled, axis=1)

        if kind == "standardize":
            return affine(x)
        if kind == "log-standardize":
            pos = x if valid is None else x[:, :, valid]
            if (pos <= 0).any():
                raise ValueError(f"log-standardize needs positive fields; found {int((pos <= 0).sum())} "
                                 f"values <= 0 (minimum {pos.min():.4g}); use 'standardize'")
            log = Log(floor=float(pos.min()) * 1e-3)
            return Chain([log, affine(log.forward(x))])
        raise ValueError(f"transform {kind!r}: valid names are 'standardize', 'log-standardize', "
                         "or pass a rho_workflow.data.transforms.Transform")
