"""Time to quality: held-out error of generated fields against training CPU time, per recipe.

Three sweeps, each with its own measure of quality, recorded every ``--evals``-th of a run:

``lognormal2d``
    The demo's sweep (pipelines/demo.yaml: 80 runs of a Latin hypercube over (index,
    amplitude), 6 realizations, 32 x 32, log-standardized; 10% of runs held out by
    :func:`~rho_workflow.data.store.assign_split`) and its network and recipe. At held-out
    points (and one training point) 256 generated fields are scored against 4096 true fields
    of the synthetic module: spectrum error (median over k of ``|P_gen / P_true - 1|``),
    Wasserstein-1 of the one-point values and variance ratio; beside each its noise floor, the
    same score of 256 independent true fields. The last evaluation of a run is also scored
    by :func:`~rho_workflow.evaluate.point_metrics.point_metrics` (every score, with floors;
    ``--point-metrics``, 75 CPU seconds: its Minkowski functionals of 4096 fields). Beside the
    noise floor, a data reference (:meth:`Lognormal2D.data_reference`): the error of the
    nearest training run's own fields and of a local-linear regression of log P(k) over the
    training runs, what the 6 fields per run support without a network.
``harmonics3d``
    The rho-Diffusion paper's 3D case: the 16 densities ``|Y_lm| r``, l <= 3, on 32^3 cells,
    conditioned on the categorical (l, m); the case's network is the former 3D default (16
    wide, on cells), which arms override (the patched default: ``PATCH2_WIDE``). Two samples per (l, m):
    relative L2 error against the exact field (median per (l, m), then median and max over
    (l, m)) and nearest-field accuracy (share of samples nearer their own field than any of
    the other 15).
``lines1d``
    pipelines/spectral_lines.yaml: 200 Voigt profiles over (temperature, pressure), 64
    cells, 5% held out. At each held-out point 16 samples: relative error of the line's full
    width at half maximum and of its area, against the exact profile measured the same way
    (median over samples, then over points).

The clock is the process CPU time of training (``time.process_time``, one torch thread;
evaluation excluded). It stands for the wall-clock time on an idle core: this machine's two
cores are shared with other jobs, which stretches wall time (recorded beside it) but not CPU
time. Every arm of a case runs for the same CPU budget: the number of steps is planned from
the CPU time of 10 calibration steps of that arm, so that the learning-rate schedule ends at
the budget.

    .venv/bin/python bench/time_to_quality.py --case lognormal2d --arm demo --cpu-minutes 6
    .venv/bin/python bench/time_to_quality.py --merge          # table, JSON and PNG of every run
    .venv/bin/python bench/time_to_quality.py --restore        # the committed runs back under bench/work
    .venv/bin/python bench/time_to_quality.py --smoke [--out PATH]   # every case, seconds

Each run writes ``bench/work/time_to_quality/CASE__ARM.json``; ``--merge`` combines them into
``bench/results/time_to_quality.json`` and ``time_to_quality.png``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_output_options, machine, result_path, table, write_result  # noqa: E402

from rho_workflow.api import RhoModel, default_network  # noqa: E402
from rho_workflow.data import synthetic  # noqa: E402
from rho_workflow.data.make_data import DESIGN_STREAM  # noqa: E402
from rho_workflow.data.store import assign_split  # noqa: E402
from rho_workflow.evaluate.point_metrics import point_metrics  # noqa: E402
from rho_workflow.evaluate.spectra import power_spectrum, spectrum_error  # noqa: E402
from rho_workflow.training.trainer import EMA, TrainConfig, train  # noqa: E402

WORK = Path(__file__).resolve().parent / "work" / "time_to_quality"
#: The sampler of every evaluation, fixed so that arms differ in training only: DPM-Solver++(3M)
#: at 25 calls on log-snr levels, the package default until issue 14 (the default since, UniPC
#: at 12 calls on fitted levels, scores the same on bench/sampler_nfe's model)
SAMPLING = {"sampler": "dpmpp_3m", "steps": 25, "spacing": "log-snr"}
RECIPE = {"batch_size": 32, "lr": 1e-3, "warmup_steps": 50, "ema_decay": 0.99, "seed": 0,  # demo.yaml
          # every arm on the schedule's levels (the package default) unless it names another
          "sigma_sampling": "schedule"}

#: Recipe changes tried against each case's base ("train": TrainConfig options, "network":
#: network-config overrides). "before" is the recipe before issue 14 (schedule's own levels).
#: the 3D recipe the arms below vary: interpolated resolution shift, bf16 autocast
INTERP_BF16 = {"noise_shift": "auto", "noise_shift_profile": "interpolated", "mixed_precision": "bf16"}
#: the 3D network on 2^3-cell patches, twice as wide (the default of 32^3 grids since)
PATCH2_WIDE = {"patch_size": 2, "base_channels": 32}
#: no condition dropout (model.p_uncond 0: one deterministic field per (l, m), nothing to guide)
NO_DROPOUT = {"condition": {"p_uncond": 0.0}}
#: the patched 3D network without condition dropout, the base of the later 32^3 arms
PATCH2_NOUNCOND = {**PATCH2_WIDE, **NO_DROPOUT}

ARMS: dict[str, dict[str, Any]] = {
    "before": {"train": {"noise_shift": 1.0}},
    "shift": {"train": {"noise_shift": "auto"}},
    "shift-x2": {"train": {"noise_shift": 2.0}},
    "edm": {"train": {"noise_shift": 1.0, "sigma_sampling": "lognormal"}},
    "min-snr": {"train": {"noise_shift": 1.0, "weighting": "min-snr"}},
    "bf16": {"train": {"noise_shift": 1.0, "mixed_precision": "bf16"}},
    "shift-bf16": {"train": {"noise_shift": "auto", "mixed_precision": "bf16"}},
    "lr2e-3": {"train": {"noise_shift": 1.0, "lr": 2e-3}},
    "batch16": {"train": {"noise_shift": 1.0, "batch_size": 16}},
    "wide": {"train": {"noise_shift": 1.0}, "network": {"base_channels": 32}},
    "shift-wide": {"train": {"noise_shift": "auto"}, "network": {"base_channels": 32}},
    "jitter0.03": {"train": {"noise_shift": "auto"}, "network": {"condition": {"jitter": 0.03}}},
    "jitter0.06": {"train": {"noise_shift": "auto"}, "network": {"condition": {"jitter": 0.06}}},
    "jitter0.1": {"train": {"noise_shift": "auto"}, "network": {"condition": {"jitter": 0.1}}},
    "ema0.999": {"train": {"noise_shift": "auto", "ema_decay": 0.999}},
    # EDM2's power-function EMA (width 10% of the steps so far); the other profiles are tracked
    # in the same run and scored at its end: the EMA length chosen after training
    "ema-power": {"train": {"noise_shift": "auto", "ema": "power", "ema_std": 0.10},
                  "ema_variants": {"power-0.05": ["power", 0.05], "power-0.20": ["power", 0.20],
                                   "exponential-0.99": ["exponential", 0.99]}},
    # the sweep's symmetries (periodic box, isotropic): every training field moved by a random
    # translation, reflection and axis permutation (rho_workflow.training.augment)
    "augment": {"train": {"noise_shift": "auto", "augment": ["roll", "flip", "transpose"]}},
    # the same, keeping the EMA weights of the lowest of 40 validation losses (keep: best)
    "shift-best": {"train": {"noise_shift": "auto"}, "validate_evals": 40},
    "augment-best": {"train": {"noise_shift": "auto", "augment": ["roll", "flip", "transpose"]},
                     "validate_evals": 40},
    # the same two in bf16 autocast (1.25x steps per CPU second on AVX-512 CPUs, 10x fewer on AVX2-only ones)
    "shift-best-bf16": {"train": {"noise_shift": "auto", "mixed_precision": "bf16"}, "validate_evals": 40},
    "augment-best-bf16": {"train": {"noise_shift": "auto", "mixed_precision": "bf16",
                                    "augment": ["roll", "flip", "transpose"]}, "validate_evals": 40},
    # 3D levers (ranked on harmonics3d16 first): learning rate, batch, width
    "shift-bf16-lr2e-3": {"train": {"noise_shift": "auto", "mixed_precision": "bf16", "lr": 2e-3}},
    "shift-bf16-batch8": {"train": {"noise_shift": "auto", "mixed_precision": "bf16", "batch_size": 8}},
    "shift-bf16-wide": {"train": {"noise_shift": "auto", "mixed_precision": "bf16"},
                        "network": {"base_channels": 32}},
    # the shift interpolated from none at the lowest levels to the full factor at the highest
    # (the sampler's last levels lie below every level the constant shift trains at 32^3)
    "interp-bf16": {"train": INTERP_BF16},
    "interp-bf16-lr2e-3": {"train": {**INTERP_BF16, "lr": 2e-3}},
    # lognormal levels on the 16^3 proxy's network on cells (p_uncond 0.1): there they lost the
    # labels (72% of samples nearest their own field after 5 CPU-minutes, the schedule's 100%)
    "interp-bf16-lognormal": {"train": {**INTERP_BF16, "sigma_sampling": "lognormal"}},
    # the same pair without condition dropout (pipelines/spherical_harmonics.yaml's setting)
    "interp-bf16-nouncond": {"train": INTERP_BF16, "network": NO_DROPOUT},
    "interp-bf16-nouncond-lognormal": {"train": {**INTERP_BF16, "sigma_sampling": "lognormal"},
                                       "network": NO_DROPOUT},
    # the cells' positions as input channels (UNet coordinates): fields tied to their grid
    "interp-bf16-coords": {"train": INTERP_BF16, "network": {"coordinates": True}},
    # the 32^3 field folded into 2^3 patches (UNet patch_size: 2): every level on 8x fewer
    # positions, so ~4x more steps per CPU second; and the same with the width doubled
    "interp-bf16-coords-patch2": {"train": INTERP_BF16, "network": {"coordinates": True, "patch_size": 2}},
    "interp-bf16-coords-patch2-wide": {"train": INTERP_BF16, "network": {"coordinates": True, **PATCH2_WIDE}},
    "interp-bf16-patch2-wide": {"train": INTERP_BF16, "network": PATCH2_WIDE},
    # the default patched 3D network with EDM2's power-function EMA, and at half the learning rate
    "interp-bf16-patch2-wide-power": {"train": {**INTERP_BF16, "ema": "power", "ema_std": 0.10},
                                      "network": PATCH2_WIDE},
    "interp-bf16-patch2-wide-lr5e-4": {"train": {**INTERP_BF16, "lr": 5e-4}, "network": PATCH2_WIDE},
    # self-attention at the coarsest level of the patched network (4^3 positions at 32^3: cheap),
    # for structure that spans the box; and no condition dropout (p_uncond 0: every step learns
    # its (l, m); the 16 fields are deterministic, nothing to guide)
    "interp-bf16-patch2-wide-attn": {"train": INTERP_BF16, "network": {**PATCH2_WIDE, "attention_levels": [2]}},
    # the convolutions continue the field beyond the box's faces (UNet boundary: replicate), where
    # |Y_lm| r is largest (zero padding makes the faces walls of the mean value)
    "interp-bf16-patch2-wide-replicate": {"train": INTERP_BF16, "network": {**PATCH2_WIDE, "boundary": "replicate"}},
    "interp-bf16-patch2-wide-nouncond": {"train": INTERP_BF16,
                                         "network": PATCH2_NOUNCOND},
    # the 3D default (p_uncond 0) with faster optimisation: twice the learning rate, twice the
    # batch, and attention at the coarsest level again (compared on one machine)
    "interp-bf16-patch2-wide-nouncond-lr2e-3": {"train": {**INTERP_BF16, "lr": 2e-3},
                                                "network": PATCH2_NOUNCOND},
    "interp-bf16-patch2-wide-nouncond-batch8": {"train": {**INTERP_BF16, "batch_size": 8},
                                                "network": PATCH2_NOUNCOND},
    # EDM's lognormal training levels (median sigma 0.3) under the same interpolated shift: 3x the
    # draws below sigma 1, where the denoiser left the noise in the samples (their errors were
    # independent draws, 77% of the power at |k| >= 8 cycles per box)
    "interp-bf16-patch2-wide-nouncond-lognormal": {"train": {**INTERP_BF16, "sigma_sampling": "lognormal"},
                                                   "network": PATCH2_NOUNCOND},
    # the same with another training seed (its spread), and with attention at the coarsest level
    "interp-bf16-patch2-wide-nouncond-lognormal-seed1": {
        "train": {**INTERP_BF16, "sigma_sampling": "lognormal", "seed": 1},
        "network": PATCH2_NOUNCOND},
    # half the draws from the schedule's levels (recall the field from its label), half from
    # lognormal's (remove the noise): for 32^3 on patches and the 16^3 proxy on cells alike
    "interp-bf16-patch2-wide-nouncond-mixture": {"train": {**INTERP_BF16, "sigma_sampling": "mixture"},
                                                 "network": PATCH2_NOUNCOND},
    "interp-bf16-mixture": {"train": {**INTERP_BF16, "sigma_sampling": "mixture"}},
    "interp-bf16-patch2-wide-nouncond-lognormal-seed2": {
        "train": {**INTERP_BF16, "sigma_sampling": "lognormal", "seed": 2},
        "network": PATCH2_NOUNCOND},
    "interp-bf16-patch2-wide-nouncond-lognormal-attn": {
        "train": {**INTERP_BF16, "sigma_sampling": "lognormal"},
        "network": {**PATCH2_NOUNCOND, "attention_levels": [2]}},
    "interp-bf16-patch2-wide-nouncond-attn": {"train": INTERP_BF16,
                                              "network": {**PATCH2_NOUNCOND, "attention_levels": [2]}},
    "interp-bf16-coords-patch2-wide-lr2e-3": {"train": {**INTERP_BF16, "lr": 2e-3},
                                              "network": {"coordinates": True, **PATCH2_WIDE}},
    # 2D: the demo's network on 2x2 patches (4x fewer positions), and twice as wide
    "shift-patch2": {"train": {"noise_shift": "auto"}, "network": {"patch_size": 2}},
    "shift-patch2-wide": {"train": {"noise_shift": "auto"}, "network": {"patch_size": 2, "base_channels": 32}},
    "augment-patch2-wide": {"train": {"noise_shift": "auto", "augment": ["roll", "flip", "transpose"]},
                            "network": {"patch_size": 2, "base_channels": 32}},
    # augment-best-bf16 with EDM2's power-function EMA (std 0.10): the kept weights average
    # the last ~10% of the run, not the last 100 steps (the 0.99 EMA's scores moved by the
    # floor's size from one evaluation to the next)
    "augment-power-best-bf16": {"train": {"noise_shift": "auto", "mixed_precision": "bf16", "ema": "power",
                                          "ema_std": 0.10, "augment": ["roll", "flip", "transpose"]},
                                "validate_evals": 40},
    # the same on the periodic network (UNet boundary: periodic), the demo's since
    "periodic-augment-power-best-bf16": {"train": {"noise_shift": "auto", "mixed_precision": "bf16", "ema": "power",
                                                   "ema_std": 0.10, "augment": ["roll", "flip", "transpose"]},
                                         "network": {"boundary": "periodic"}, "validate_evals": 40},
    "augment-power": {"train": {"noise_shift": "auto", "augment": ["roll", "flip", "transpose"],
                                "ema": "power", "ema_std": 0.10}},
}


def demo_arm() -> dict[str, Any]:
    """The recipe of pipelines/demo.yaml as an arm: its training options, its network and its
    number of steps (not a CPU budget)."""
    import yaml

    spec = yaml.safe_load((Path(__file__).resolve().parents[1] / "pipelines" / "demo.yaml").read_text())
    train_opts = {k: v for k, v in spec["training"].items() if k in TrainConfig.model_fields
                  and k not in ("steps", "log_every", "checkpoint_every", "device")}
    network = {k: v for k, v in (spec["model"].get("network") or {}).items() if k not in ("kind", "dims")}
    return {"train": train_opts, "network": network, "fixed_steps": int(spec["training"]["steps"])}


ARMS["demo"] = demo_arm()
#: candidates for the demo's recipe (its network, batch and learning rate; a fixed number of steps,
#: so the cosine decay ends where the run does): the 2D winners of the 30-minute runs
#: (augmentation, bf16, power EMA) at the step counts that fit make demo's 10 minutes
DEMO_WINNERS = {"mixed_precision": "bf16", "augment": ["roll", "flip", "transpose"]}
for _steps in (2000, 3000, 4000):
    ARMS[f"demo-augment-power-bf16-{_steps}"] = {
        **ARMS["demo"], "fixed_steps": _steps,
        "train": {**ARMS["demo"]["train"], **DEMO_WINNERS, "ema": "power", "ema_std": 0.10}}
    ARMS[f"demo-augment-bf16-{_steps}"] = {**ARMS["demo"], "fixed_steps": _steps,
                                           "train": {**ARMS["demo"]["train"], **DEMO_WINNERS}}
    # the same on the periodic U-Net (circular padding: the box's faces are not walls)
    for _name in (f"demo-augment-power-bf16-{_steps}", f"demo-augment-bf16-{_steps}"):
        ARMS[_name.replace("demo-", "demo-periodic-")] = {
            **ARMS[_name], "network": {**ARMS[_name]["network"], "boundary": "periodic"}}


# -- the sweeps --------------------------------------------------------------------------------
class Case:
    """A sweep: training fields and points, a model factory and its scoring."""

    kind: str
    transform: str
    size: int

    def model(self, network: dict[str, Any]) -> RhoModel:
        spec = synthetic.field_spec(self.kind, self.size)
        net = {**default_network(spec.shape), **self.network, **network}
        return RhoModel.create(spec.shape, spec.param_space(), network=net, device="cpu")

    network: dict[str, Any] = {}


class Lognormal2D(Case):
    kind, transform, size = "lognormal-field", "log-standardize", 32
    network = {"base_channels": 16}  # demo.yaml

    #: score the last evaluation of the first held-out point with point_metrics too (75 s)
    point_metrics = False

    def __init__(self, smoke: bool, samples: int = 256, truth: int = 4096, runs: int = 80,
                 realizations: int = 6):
        runs, realizations = (8, 2) if smoke else (runs, realizations)
        self.samples, self.truth = (4, 64) if smoke else (samples, truth)
        design = synthetic.default_points(self.kind, runs, np.random.default_rng([0, DESIGN_STREAM]))
        split = assign_split(design, [f"run{i:04d}" for i in range(runs)], 0.05, 0.1, 0)
        self.fields = np.stack([synthetic.generate(self.kind, design[i], size=32,
                                                   rng=np.random.default_rng([0, i, r]))[0]
                                for i in range(runs) if split[i] == 0 for r in range(realizations)])
        self.points = [design[i] for i in range(runs) if split[i] == 0 for _ in range(realizations)]
        held = [design[i] for i in range(runs) if split[i] == 2]
        # the validation runs of the split (never trained on) and as many training fields, for
        # the denoising loss on fixed draws: does it see memorization? (evaluate)
        self.val_points = [design[i] for i in range(runs) if split[i] == 1 for _ in range(realizations)]
        self.val_fields = np.stack([synthetic.generate(self.kind, design[i], size=32, rng=np.random.default_rng([0, i, r]))[0]
                                    for i in range(runs) if split[i] == 1 for r in range(realizations)]
                                   or [self.fields[0]])  # smoke: no validation run; a training field stands in
        self.val_points = self.val_points or [self.points[0]]
        self.eval_points = {"held_out_0": held[0], "held_out_1": held[-1], "train": self.points[0]}
        self.truth_sets = {}
        for j, (label, pt) in enumerate(self.eval_points.items()):
            ref = self._true(pt, self.truth, seed=[1, j])
            indep = self._true(pt, self.samples, seed=[2, j])
            self.truth_sets[label] = (ref, indep, self._scores(indep, ref))

    def _true(self, point: dict, n: int, seed: list[int]) -> np.ndarray:
        return np.stack([synthetic.generate(self.kind, point, size=32, rng=np.random.default_rng([*seed, i]))[0]
                         for i in range(n)])

    @staticmethod
    def _scores(gen: np.ndarray, ref: np.ndarray) -> dict[str, float]:
        """The three headline scores of point_metrics (same definitions, without the costly rest)."""
        from scipy.stats import wasserstein_distance
        p_gen = power_spectrum(gen, synthetic.BOX_SIZE_MPC, ndim=2)[1]
        p_ref = power_spectrum(ref, synthetic.BOX_SIZE_MPC, ndim=2)[1]
        return {"spectrum_error": spectrum_error(p_gen, p_ref),
                "spectrum_ratio": (p_gen / p_ref).tolist(),  # per k-shell, for the shape of the error
                "wasserstein_1": float(wasserstein_distance(gen.ravel(), ref.ravel())),
                "variance_ratio": float(np.mean(np.var(gen, axis=(1, 2))) / np.mean(np.var(ref, axis=(1, 2))))}

    def data_reference(self, bandwidth: float = 0.1) -> dict[str, Any]:
        """What the training fields alone support, without a network: at each evaluation point
        the spectrum error of (a) the 6 fields of the nearest training run and (b) a local-linear
        regression of log P(k) on the normalized parameters over every training run (Gaussian
        kernel of ``bandwidth`` of each range; 0.08-0.12 scored best over the 8 held-out runs).
        Both against the same 4096 true fields as the model."""
        space = synthetic.field_spec(self.kind, self.size).param_space()
        runs = sorted({tuple(sorted(p.items())) for p in self.points})  # each run's fields pooled
        x = space.normalize(space.to_array([dict(r) for r in runs]))
        log_p = np.log(np.stack([
            power_spectrum(self.fields[[tuple(sorted(p.items())) == r for p in self.points]],
                           synthetic.BOX_SIZE_MPC, ndim=2)[1] for r in runs]))
        out: dict[str, Any] = {"bandwidth": bandwidth}
        for label, pt in self.eval_points.items():
            x0 = space.normalize(space.to_array([pt]))[0]
            d2 = ((x - x0) ** 2).sum(1)
            nearest = d2 <= d2.min() + 1e-12
            p_true = power_spectrum(self.truth_sets[label][0], synthetic.BOX_SIZE_MPC, ndim=2)[1]
            w = np.exp(-d2 / (2 * bandwidth ** 2))
            a = np.c_[np.ones(len(x)), x - x0]
            beta = np.linalg.solve(a.T @ (w[:, None] * a), a.T @ (w[:, None] * log_p))
            out[label] = {"nearest_run_spectrum_error": spectrum_error(np.exp(log_p[nearest][0]), p_true),
                          "local_linear_spectrum_error": spectrum_error(np.exp(beta[0]), p_true)}
        held = [v for k, v in out.items() if k.startswith("held_out")]
        for key in ("nearest_run_spectrum_error", "local_linear_spectrum_error"):
            out[f"held_out_{key}"] = float(np.mean([h[key] for h in held]))
        return out

    def fixed_draw_loss(self, model: RhoModel, fields: np.ndarray, points: list[dict], draws: int = 16) -> float:
        """Denoising loss of the EMA weights on ``fields`` at ``draws`` fixed noise levels and
        noises per field (the training distribution of levels, seeded: the same at every call)."""
        from rho_workflow.diffusion.losses import denoising_loss, sample_training_sigmas

        g = torch.Generator().manual_seed(11)
        z = torch.as_tensor(model.transform.forward(np.asarray(fields, np.float64)[:, None]), dtype=torch.float32)
        z = z.repeat_interleave(draws, 0)
        cond = torch.from_numpy(model.param_space.to_array(points)).repeat_interleave(draws, 0)
        sigma = sample_training_sigmas(model.schedule, len(z), g)
        noise = torch.randn(z.shape, generator=g)
        den = model._denoiser_for_sampling()
        with torch.no_grad():
            total = sum(float(denoising_loss(den, z[s:s + 256], cond[s:s + 256], model.schedule,
                                             sigma=sigma[s:s + 256], noise=noise[s:s + 256])) * len(z[s:s + 256])
                        for s in range(0, len(z), 256))
        return total / len(z)

    def evaluate(self, model: RhoModel, final: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"validation_loss": self.fixed_draw_loss(model, self.val_fields, self.val_points),
                               "train_subset_loss": self.fixed_draw_loss(model, self.fields[:len(self.val_fields)],
                                                                         self.points[:len(self.val_fields)])}
        for label, pt in self.eval_points.items():
            gen = model.sample(pt, n=self.samples, seed=7, batch_size=128, **SAMPLING)[0, :, 0]
            ref, indep, floor = self.truth_sets[label]
            scores = self._scores(gen, ref)
            out[label] = {k: v for k, v in scores.items()}
            out[label].update({f"{k}_floor": v for k, v in floor.items()})
            out[label]["variance_ratio_floor"] = abs(floor["variance_ratio"] - 1.0)
            if final and self.point_metrics and label == "held_out_0":
                ds = point_metrics(gen, ref, box_size=synthetic.BOX_SIZE_MPC, field_units="1",
                                   length_units="Mpc", reference_b=indep, triangles=())
                out[label]["point_metrics"] = {str(k): float(ds[k]) for k in ds.data_vars if ds[k].ndim == 0}
        held = [v for k, v in out.items() if k.startswith("held_out")]
        out["held_out_spectrum_error"] = float(np.mean([h["spectrum_error"] for h in held]))
        out["held_out_spectrum_floor"] = float(np.mean([h["spectrum_error_floor"] for h in held]))
        out["held_out_over_floor"] = out["held_out_spectrum_error"] / out["held_out_spectrum_floor"]
        out["held_out_over_train"] = out["held_out_spectrum_error"] / out["train"]["spectrum_error"]
        return out


class Harmonics3D(Case):
    kind, transform = "spherical-harmonics", "standardize"
    #: the 3D default before it was patched (32^3 grids), so that every arm keeps its meaning
    network = {"base_channels": 16, "patch_size": 1}

    def __init__(self, smoke: bool, size: int = 32, per_lm: int = 2):
        self.size, self.per_lm = (8 if smoke else size), (1 if smoke else per_lm)
        self.lms = [(l, m) for l in range(4) for m in range(-l, l + 1)]
        self.points = [{"l": l, "m": m} for l, m in self.lms]
        self.fields = np.stack([synthetic.generate(self.kind, p, size=self.size)[0] for p in self.points])

    def evaluate(self, model: RhoModel, final: bool) -> dict[str, Any]:
        gen = model.sample(self.points, n=self.per_lm, seed=7, batch_size=16, **SAMPLING)[:, :, 0]  # (16, n, *grid)
        f = self.fields
        norm = np.sqrt((f ** 2).reshape(len(f), -1).sum(1))
        dist = np.sqrt(((gen[:, :, None] - f[None, None]) ** 2).reshape(*gen.shape[:2], len(f), -1).sum(-1))
        own = dist[np.arange(len(f)), :, np.arange(len(f))] / norm[:, None]  # (16, n)
        rel = np.median(own, axis=1)
        nearest = dist.argmin(-1)
        out = {}
        n = gen.shape[1]
        if n > 1:  # the error split into the part every sample shares (bias) and the part that
            # differs from sample to sample (noise left by the denoiser): E|e_i|^2 = b^2 + v and
            # E|mean e|^2 = b^2 + v / n
            err = gen - f[:, None]
            single = (err ** 2).reshape(len(f), n, -1).sum(-1).mean(1)
            of_mean = (err.mean(1) ** 2).reshape(len(f), -1).sum(-1)
            bias2 = np.clip((n * of_mean - single) / (n - 1), 0, None)
            out = {"rel_l2_systematic_median": float(np.median(np.sqrt(bias2) / norm)),
                   "rel_l2_sample_noise_median": float(np.median(np.sqrt(np.clip(single - bias2, 0, None)) / norm))}
        return {"rel_l2_median": float(np.median(rel)), "rel_l2_max": float(rel.max()), **out,
                "rel_l2_per_lm": {f"{l},{m}": float(r) for (l, m), r in zip(self.lms, rel)},
                "nearest_accuracy": float((nearest == np.arange(len(f))[:, None]).mean()),
                "nearest_of_first_sample": nearest[:, 0].tolist()}


class Lines1D(Case):
    kind, transform, size = "spectral-lines", "standardize", 64
    network = {"base_channels": 16}  # spectral_lines.yaml

    def __init__(self, smoke: bool, runs: int = 200, samples: int = 16):
        runs = 20 if smoke else runs
        self.samples = 2 if smoke else samples
        design = synthetic.default_points(self.kind, runs, np.random.default_rng([0, DESIGN_STREAM]))
        split = assign_split(design, [f"run{i:04d}" for i in range(runs)], 0.05, 0.05, 0)
        self.points = [design[i] for i in range(runs) if split[i] == 0]
        self.fields = np.stack([synthetic.generate(self.kind, p, size=64)[0] for p in self.points])
        self.eval_points = [design[i] for i in range(runs) if split[i] == 2]
        self.nu = synthetic.line_wavenumbers(64)

    def width_area(self, profile: np.ndarray) -> tuple[float, float]:
        """FWHM (linear interpolation of the half-maximum crossings) and area (trapezoid)."""
        i = int(np.argmax(profile))
        half = profile[i] / 2
        left = i
        while left > 0 and profile[left] > half:
            left -= 1
        right = i
        while right < len(profile) - 1 and profile[right] > half:
            right += 1
        cross = lambda a, b: self.nu[a] + (half - profile[a]) * (self.nu[b] - self.nu[a]) / (profile[b] - profile[a])
        return float(cross(right - 1, right) - cross(left, left + 1)), float(np.trapezoid(profile, self.nu))

    def evaluate(self, model: RhoModel, final: bool) -> dict[str, Any]:
        gen = model.sample(self.eval_points, n=self.samples, seed=7, batch_size=64, **SAMPLING)[:, :, 0]
        width_err, area_err = [], []
        for pt, samples in zip(self.eval_points, gen):
            w_true, a_true = self.width_area(synthetic.generate(self.kind, pt, size=64)[0])
            wa = np.array([self.width_area(s) for s in samples])
            width_err.append(np.median(np.abs(wa[:, 0] / w_true - 1)))
            area_err.append(np.median(np.abs(wa[:, 1] / a_true - 1)))
        return {"width_error": float(np.median(width_err)), "area_error": float(np.median(area_err)),
                "points": len(self.eval_points)}


CASES: dict[str, Callable[[bool], Case]] = {"lognormal2d": Lognormal2D, "harmonics3d": Harmonics3D,
                                            "lines1d": Lines1D,
                                            # 8x cheaper proxy of harmonics3d, to rank its levers
                                            "harmonics3d16": lambda smoke: Harmonics3D(smoke, size=16)}
CASE_BATCH = {"harmonics3d": 4, "harmonics3d16": 4}  # the measurement of the default 3D model
HEADLINE = {"lognormal2d": "held_out_spectrum_error", "harmonics3d": "rel_l2_median", "lines1d": "width_error",
            "harmonics3d16": "rel_l2_median"}


# -- one run ---------------------------------------------------------------------------------------
def train_config(case_name: str, arm: dict[str, Any], steps: int, every: int) -> dict[str, Any]:
    opts = {**RECIPE, "batch_size": CASE_BATCH.get(case_name, RECIPE["batch_size"]), **arm.get("train", {})}
    if arm.get("validate_evals"):  # model selection: that many validation losses over the run
        opts.update(validate_every=max(1, steps // arm["validate_evals"]), keep="best")
    return {**opts, "steps": steps, "checkpoint_every": every, "log_every": 10 ** 9, "device": "cpu"}


def prepare(case: Case, arm: dict[str, Any]) -> tuple[RhoModel, torch.Tensor, torch.Tensor]:
    model = case.model(arm.get("network", {}))
    x = np.asarray(case.fields, dtype=np.float64)[:, None]
    transform = model._fit_transform(case.transform, x, None)
    model.set_normalization(transform)
    z = torch.as_tensor(transform.forward(x), dtype=torch.float32)
    model.denoiser.sigma_data = float(z.std())
    model.config["diffusion"]["sigma_data"] = float(z.std())
    cond = torch.from_numpy(model.param_space.to_array(case.points))
    return model, z, cond


def calibrate(case_name: str, case: Case, arm: dict[str, Any], steps: int = 10) -> float:
    """CPU seconds per training step of this arm (after 2 warm-up steps)."""
    model, z, cond = prepare(case, arm)
    cfg = TrainConfig(**train_config(case_name, arm, 2 + steps, 0))
    times: list[float] = []
    t = [time.process_time()]

    def on_log(step: int, loss: float) -> None:
        now = time.process_time()
        if step >= 2:
            times.append(now - t[0])
        t[0] = now

    cfg = cfg.model_copy(update={"log_every": 1, "validate_every": 0, "keep": "last", "patience": 0})
    train(model.denoiser, model.schedule, z, cond, cfg, progress=False, on_log=on_log)
    return float(np.median(times))


def run(case_name: str, arm_name: str, cpu_minutes: float, evals: int, smoke: bool) -> dict[str, Any]:
    """Train ``arm_name`` on ``case_name`` for ``cpu_minutes`` of CPU time, scoring ``evals`` times."""
    torch.manual_seed(0)
    case = CASES[case_name](smoke)
    arm = ARMS[arm_name]
    per_step = calibrate(case_name, case, arm)
    steps = arm.get("fixed_steps") or max(evals, int(cpu_minutes * 60 / per_step))
    every = max(1, steps // evals)
    steps = steps if arm.get("fixed_steps") else every * evals
    model, z, cond = prepare(case, arm)
    cfg = TrainConfig(**train_config(case_name, arm, steps, every))
    validation = None
    if cfg.validate_every:  # model selection on the validation runs, as the package does it
        vz = torch.as_tensor(model.transform.forward(np.asarray(case.val_fields, np.float64)[:, None]),
                             dtype=torch.float32)
        validation = (vz, torch.from_numpy(model.param_space.to_array(case.val_points, allow_extrapolation=True)))
    variants = {name: EMA(model.denoiser.net, decay=std if kind == "exponential" else 0.0, kind=kind,
                          std=std if kind == "power" else 0.10)
                for name, (kind, std) in arm.get("ema_variants", {}).items()}
    curve: list[dict[str, Any]] = []
    clock = {"cpu": time.process_time(), "wall": time.perf_counter(), "eval_cpu": 0.0, "eval_wall": 0.0}
    losses: list[float] = []

    def on_checkpoint(state: dict) -> None:
        c0, w0 = time.process_time(), time.perf_counter()
        model.ema_state = {k: v.detach().clone() for k, v in state["ema"].items()}
        model._sampling_denoiser = None
        model.denoiser.train()
        row = {"step": state["step"],
               "cpu_s": c0 - clock["cpu"] - clock["eval_cpu"], "wall_s": w0 - clock["wall"] - clock["eval_wall"],
               "loss": float(np.mean(losses[-every:])) if losses else None}
        row.update(case.evaluate(model, final=state["step"] == steps))
        model._sampling_denoiser = None
        if state["step"] == steps and variants:  # the other EMA profiles of the same run
            row["ema_variants"] = {}
            for name, ema in variants.items():
                model.ema_state = {k: v.detach().clone() for k, v in ema.state_dict().items()}
                row["ema_variants"][name] = case.evaluate(model, final=False)
                model._sampling_denoiser = None
            model.ema_state = {k: v.detach().clone() for k, v in state["ema"].items()}
        clock["eval_cpu"] += time.process_time() - c0
        clock["eval_wall"] += time.perf_counter() - w0
        curve.append(row)
        print(f"  [{case_name} {arm_name}] step {row['step']}: cpu {row['cpu_s']:.0f} s, "
              f"{HEADLINE[case_name]} {row[HEADLINE[case_name]]:.4g}", flush=True)

    def on_log(step: int, loss: float) -> None:
        losses.append(loss)
        for ema in variants.values():
            ema.update(model.denoiser.net, step)

    cfg = cfg.model_copy(update={"log_every": 1})
    result, _ = train(model.denoiser, model.schedule, z, cond, cfg, progress=False, on_log=on_log,
                      on_checkpoint=on_checkpoint, validation=validation)
    selected = None
    if result.validation is not None:  # the weights the package keeps (keep: best) scored too
        model.ema_state = {k: v.detach().clone() for k, v in (result.best_ema or model.ema_state).items()}
        model._sampling_denoiser = None
        selected = {**result.validation.to_dict(), "keep": cfg.keep,
                    "scores": case.evaluate(model, final=False) if cfg.keep == "best" else None}
        print(f"  [{case_name} {arm_name}] kept step {selected['best_step']}: "
              f"{HEADLINE[case_name]} {(selected['scores'] or curve[-1])[HEADLINE[case_name]]:.4g}", flush=True)
    return {"case": case_name, "arm": arm_name, "options": arm, "config": train_config(case_name, arm, steps, every),
            "selected": selected,
            "network": model.config["network"], "params_M": model.n_parameters / 1e6,
            "noise_shift_resolved": cfg.resolved_noise_shift(tuple(z.shape[1:])),
            "cpu_minutes_budget": cpu_minutes, "calibrated_cpu_s_per_step": per_step, "steps": steps,
            "threads": torch.get_num_threads(), "machine": machine(), "sampling": SAMPLING, "curve": curve}


# -- merge: table, JSON, PNG -------------------------------------------------------------------
def summary_rows(runs: list[dict[str, Any]], data_reference: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    rows = []
    for r in runs:
        last = r["curve"][-1]
        flags = r.get("machine", {}).get("cpu_flags")  # runs before the flags were recorded: AVX-512 machines
        kind = "avx512" if flags is None or "avx512f" in flags else "avx2"
        row = {"case": r["case"], "arm": r["arm"], "cpu": kind + ("+amx" if flags and "amx_bf16" in flags else ""),
               "params_M": r["params_M"], "steps": r["steps"],
               "cpu_s": last["cpu_s"], "wall_s": last["wall_s"], HEADLINE[r["case"]]: last[HEADLINE[r["case"]]]}
        sel = r.get("selected")
        if sel and sel.get("scores"):  # keep: best -- the kept weights are the run's model
            row.update(kept_step=sel["best_step"], last_error=last[HEADLINE[r["case"]]])
            row[HEADLINE[r["case"]]] = sel["scores"][HEADLINE[r["case"]]]
            last = {**last, **sel["scores"]}
        if r["case"] == "lognormal2d":
            held = [last[k] for k in last if k.startswith("held_out_") and isinstance(last[k], dict)]
            row.update(floor=last["held_out_spectrum_floor"], over_floor=last["held_out_over_floor"],
                       held_over_train=last["held_out_over_train"],
                       w1=float(np.mean([h["wasserstein_1"] for h in held])),
                       w1_floor=float(np.mean([h["wasserstein_1_floor"] for h in held])),
                       var_ratio=float(np.mean([h["variance_ratio"] for h in held])))
            if data_reference is not None:
                ref = data_reference
                row.update(data_nearest=ref["held_out_nearest_run_spectrum_error"],
                           data_loclin=ref["held_out_local_linear_spectrum_error"])
        elif r["case"].startswith("harmonics3d"):
            row.update(rel_l2_max=last["rel_l2_max"], nearest_accuracy=last["nearest_accuracy"])
        else:
            row.update(area_error=last["area_error"])
        rows.append(row)
    return rows


def plot(runs: list[dict[str, Any]], path: Path, data_reference: dict[str, Any] | None = None) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = sorted({r["case"] for r in runs})
    most = max(sum(r["case"] == c for r in runs) for c in cases)  # legends below the axes, one arm a line
    fig, axes = plt.subplots(1, len(cases), figsize=(5.5 * len(cases), 4 + 0.16 * most), squeeze=False)
    for ax, case in zip(axes[0], cases):
        for i, r in enumerate(r for r in runs if r["case"] == case):
            x = [p["cpu_s"] / 60 for p in r["curve"]]
            ax.plot(x, [p[HEADLINE[case]] for p in r["curve"]], marker="osD^"[i // 10 % 4],
                    ls=["-", "--", "-.", ":"][i // 10 % 4], label=r["arm"])  # the colours repeat every 10
        if case == "lognormal2d":
            floor = [r["curve"][-1]["held_out_spectrum_floor"] for r in runs if r["case"] == case][0]
            ax.axhline(floor, color="k", ls=":", label="noise floor")
            if data_reference is not None:
                ax.axhline(data_reference["held_out_local_linear_spectrum_error"], color="k", ls="--",
                           label="training fields, local-linear (no network)")
        if case == "harmonics3d":
            ax.axhline(0.05, color="k", ls=":", label="goal: 5% (every (l, m))")
        ax.set(xlabel="training CPU minutes (1 thread)", ylabel=HEADLINE[case], title=case, yscale="log")
        ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.14), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def merge(work: Path, out: Path, smoke: bool) -> None:
    runs = [json.loads(p.read_text()) for p in sorted(work.glob("*__*.json"))]
    reference = Lognormal2D(smoke).data_reference() if any(r["case"] == "lognormal2d" for r in runs) else None
    rows = summary_rows(runs, reference)
    cols = ["case", "arm", "cpu", "params_M", "steps", "kept_step", "cpu_s", "wall_s", "held_out_spectrum_error", "last_error", "floor",
            "over_floor", "data_nearest", "data_loclin", "held_over_train", "w1", "w1_floor", "var_ratio", "rel_l2_median", "rel_l2_max",
            "nearest_accuracy", "width_error", "area_error"]
    print(table(rows, cols))
    payload = {"benchmark": "time_to_quality", "machine": machine(), "smoke": smoke,
               "clock": "cpu_s: process CPU seconds of training, one torch thread, evaluation excluded; "
                        "it stands for wall-clock seconds on an idle core (wall_s beside it is stretched "
                        "by other jobs on the shared cores). Compare cpu_s only within one 'cpu' kind: "
                        "the AVX2-only machines of this kind take 2.9x the CPU seconds per step of the "
                        "AVX-512 ones (demo network, fp32: 0.387 against 0.133 s)",
               "recipe": RECIPE, "arms": ARMS, "summary": rows, "lognormal2d_data_reference": reference,
               "runs": runs}
    write_result(out, payload)
    plot(runs, out.with_suffix(".png"), reference)
    print(f"wrote {out} and {out.with_suffix('.png')}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", choices=sorted(CASES))
    ap.add_argument("--arm", choices=sorted(ARMS), default="shift")
    ap.add_argument("--cpu-minutes", type=float, default=6.0)
    ap.add_argument("--label", default=None,
                    help="name of the run (default: the arm), for one arm at several budgets, e.g. shift-30min")
    ap.add_argument("--evals", type=int, default=5)
    ap.add_argument("--point-metrics", action="store_true",
                    help="lognormal2d: score the last evaluation with point_metrics too")
    ap.add_argument("--merge", action="store_true", help="combine the runs under bench/work/time_to_quality")
    ap.add_argument("--restore", action="store_true",
                    help="write the runs of the committed result back under bench/work/time_to_quality "
                         "(not committed), so that a --merge after new runs keeps them")
    add_output_options(ap, "time_to_quality")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    out = result_path("time_to_quality", args)
    Lognormal2D.point_metrics = args.point_metrics or args.smoke
    if args.smoke:
        with tempfile.TemporaryDirectory(prefix="rho-bench-ttq-") as tmp:
            for case in ("lognormal2d", "harmonics3d", "lines1d"):  # lognormal2d with model selection
                arm = "shift-best" if case == "lognormal2d" else "shift"
                result = run(case, arm, cpu_minutes=0.0, evals=2, smoke=True)
                (Path(tmp) / f"{case}__{arm}.json").write_text(json.dumps(result, default=float))
            merge(Path(tmp), out, smoke=True)
        return
    if args.restore:
        WORK.mkdir(parents=True, exist_ok=True)
        for r in json.loads(out.read_text())["runs"]:
            (WORK / f"{r['case']}__{r['arm']}.json").write_text(json.dumps(r, indent=1, default=float))
        return print(f"restored the runs of {out} under {WORK}")
    if args.merge:
        return merge(WORK, out, smoke=False)
    if args.case is None:
        ap.error("give --case (one run), --merge or --smoke")
    WORK.mkdir(parents=True, exist_ok=True)
    result = run(args.case, args.arm, args.cpu_minutes, args.evals, smoke=False)
    label = args.label or args.arm
    result["arm"] = label  # the row's name; "options" holds the arm's recipe
    (WORK / f"{args.case}__{label}.json").write_text(json.dumps(result, indent=1, default=float))
    print(table(summary_rows([result]), ["case", "arm", "steps", "cpu_s", "wall_s", HEADLINE[args.case]]))


if __name__ == "__main__":
    main()
