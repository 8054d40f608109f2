"""Sampler quality against network evaluations (NFE) on 32x32 lognormal fields.

A conditional model of lognormal density fields with power-law spectra, conditioned on two
continuous parameters (spectral index n, amplitude A), is trained for a fixed wall-clock
budget on 3000 fields: by default 5 fields at each of 600 values of a Latin hypercube over the
declared ranges (the design of emulator sweeps), one of them the "train" point; ``--design
grid`` takes 200 fields at each point of a 5 x 3 grid instead. For each sampler and NFE, at the
training point and at a held-out interior point (in no design), the statistic is the median
over k-bins of |P_gen(k) / P_true(k) - 1| over ``--samples`` generated fields, with P_true
from 4096 true fields. Beside it: the noise floor (the same statistic for an independent set
of true fields of the same size) and the ratio of generated to true field variance. A model
with the rho-Diffusion SHA-512 hash encoder, trained the same way, shows what the hash does at
held-out values.

    .venv/bin/python bench/sampler_nfe.py [--train-minutes 25] [--samples 256]
    .venv/bin/python bench/sampler_nfe.py --smoke [--out PATH]   # every stage in seconds

On 2 cores the stages run as separate 1-thread processes, two at a time:

    bench/sampler_nfe.py --stage train --encoders features --train-minutes 30 &
    bench/sampler_nfe.py --stage train --encoders hash --train-minutes 30 &  wait
    bench/sampler_nfe.py --stage sample --points train &
    bench/sampler_nfe.py --stage sample --points held-out &  wait
    bench/sampler_nfe.py --stage spread --spread-sampler dpmpp_2m:log-snr --spread-steps 25 --points P
    # DPM-Solver++(3M) rows and spread beside them (no second DDPM reference):
    bench/sampler_nfe.py --stage sample --samplers-only --samplers dpmpp_3m:log-snr --points P
    bench/sampler_nfe.py --stage spread --spread-sampler dpmpp_3m:log-snr --spread-steps 25 --points P
    # the 10-12-call rows of issue 14 on the same model (3200 steps remake it exactly), merged
    # with the committed rows (restore writes the committed result's parts back under bench/work):
    bench/sampler_nfe.py --stage restore
    bench/sampler_nfe.py --stage train --encoders features --train-steps 3200
    bench/sampler_nfe.py --stage sample --samplers-only --encoders features --points P \
        --samplers dpmpp_3m:log-snr unipc:log-snr unipc:fitted dpmpp_3m:fitted --nfe 10 12
    bench/sampler_nfe.py --stage spread --points P   # the API's default (unipc, fitted, 12 steps)

The merge prints the table and writes it beside the JSON (bench/results/sampler_nfe.txt).

The merge also scores each deterministic sampler with the exact denoiser of the Gaussian
log-field (:func:`exact_denoiser_rows`): the sampler's own error, without network or
Monte-Carlo error, on each sampler's own levels and on the levels fitted on the exact
Gaussian denoiser (spacing ``fitted``, rho_workflow/diffusion/fitted_levels.py). This part
needs no trained model and runs alone in under a minute (its normalization is fitted on the
training design's fields, as the model's is); it replaces the exact rows of the committed
JSON and keeps the trained-model rows there:

    bench/sampler_nfe.py --stage exact

``--smoke`` trains both models for 2 steps, samples 4 fields per row (10 NFE, DDPM 20 steps)
against 256 true fields, and merges, all in a temporary folder; the JSON goes to
``bench/work/smoke/`` or ``--out``, the table beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_output_options, machine, result_path, table, write_result  # noqa: E402

from rho_workflow.api import RhoModel  # noqa: E402
from rho_workflow.diffusion.samplers import DEFAULT_SAMPLER as API_SAMPLER  # noqa: E402
from rho_workflow.diffusion.samplers import DEFAULT_STEPS as API_STEPS, default_spacing  # noqa: E402
from rho_workflow.diffusion.samplers import SAMPLERS, sampler_spec  # noqa: E402
from rho_workflow.data import synthetic  # noqa: E402
from rho_workflow.diffusion.samplers import nfe  # noqa: E402
from rho_workflow.diffusion.fitted_levels import fitted_table  # noqa: E402
from rho_workflow.models import FeatureEncoder, fourier_aliasing  # noqa: E402
from rho_workflow.evaluate.spectra import power_spectrum, spectrum_error  # noqa: E402

KIND = "lognormal-field"
TRAIN_GRID = [{"index": n, "amplitude": a} for n in (-3.0, -2.5, -2.0, -1.5, -1.0) for a in (0.5, 1.0, 2.0)]
WORK = Path(__file__).resolve().parent / "work"
POINTS = {"train": {"index": -2.0, "amplitude": 1.0}, "held-out": {"index": -1.75, "amplitude": 1.5}}

#: The table of issue #2, measured before this project with a plain recipe (3.3M U-Net,
#: v-prediction, cosine schedule, EMA, 30 min CPU training; DDIM on uniform timesteps).
PRIOR_RECIPE = [
    {"sampler": "ddpm", "steps": 1000, "error_pct": 2.1},
    {"sampler": "ddim", "steps": 10, "error_pct": 48.0},
    {"sampler": "ddim", "steps": 25, "error_pct": 23.0},
    {"sampler": "ddim", "steps": 50, "error_pct": 13.5},
    {"sampler": "ddim", "steps": 100, "error_pct": 8.0},
    {"sampler": "dpmpp_2m (untuned)", "steps": 25, "error_pct": 10.0},
    {"sampler": "noise floor", "steps": None, "error_pct": 1.3},
]


#: The run of commit 58e7502 (features encoder with 4 Fourier octaves, 2600 steps), before the
#: aliasing fix: on the 5 x 3 training grid the octaves 2 and 3 alias, and at the held-out point
#: the network saw feature values never seen in training (variance 1.7x too high).
FOUR_OCTAVES_RUN = [
    {"point": "train", "sampler": "ddpm", "steps": 1000, "error_pct": 3.19, "var_ratio": 0.969},
    {"point": "train", "sampler": "dpmpp_2m log-snr", "steps": 25, "error_pct": 2.11, "var_ratio": 0.981},
    {"point": "held-out", "sampler": "ddpm", "steps": 1000, "error_pct": 33.78, "var_ratio": 1.742},
    {"point": "held-out", "sampler": "dpmpp_2m log-snr", "steps": 25, "error_pct": 37.10, "var_ratio": 1.728},
    {"point": "held-out", "sampler": "ddim", "steps": 25, "error_pct": 15.29, "var_ratio": 1.305},
]
API_DEFAULT = (API_SAMPLER, default_spacing(API_SAMPLER, API_STEPS))  # what RhoModel.sample uses
API_DEFAULT_STEPS = API_STEPS


def steps_for_nfe(sampler: str, target: int) -> int:
    """The most steps of ``sampler`` whose network calls (registry) do not exceed ``target``."""
    spec = sampler_spec(sampler)
    return (target + spec.calls_per_step - 1) // spec.calls_per_step


EXACT_SAMPLERS = ["ddim:discrete", "dpmpp_2m:log-snr", "dpmpp_2m:karras", "dpmpp_3m:log-snr", "heun:karras",
                  "unipc:log-snr", "unipc_bh1:log-snr", "dpmpp_2m:fitted", "dpmpp_3m:fitted", "unipc:fitted",
                  "unipc_bh1:fitted"]
#: Network calls of the exact-denoiser rows (fitted levels exist for 5 to 16 steps only).
EXACT_NFES = [8, 10, 12, 16, 25, 50, 100]


def latin_hypercube(n_points: int, seed: int) -> list[dict]:
    """The make-data sweep design (a Latin hypercube of ``n_points`` values over the declared
    ranges), with the value nearest the "train" point moved onto it, so that this point is a
    training value exactly."""
    points = synthetic.default_points(KIND, n_points, np.random.default_rng(seed))
    space = synthetic.field_spec(KIND, 32).param_space()
    unit = space.normalize(space.to_array(points))
    nearest = np.argmin(np.linalg.norm(unit - space.normalize(space.to_array(POINTS["train"])), axis=1))
    points[int(nearest)] = dict(POINTS["train"])
    return points


def training_design(design: str, n_points: int) -> list[dict]:
    """The parameter points trained on: the 5 x 3 grid, or a Latin hypercube of ``n_points``."""
    points = TRAIN_GRID if design == "grid" else latin_hypercube(n_points, seed=0)
    if POINTS["train"] not in points or POINTS["held-out"] in points:
        raise RuntimeError(f"design {design!r}: the train point must be in it and the held-out point not")
    return points


def nearest_distance(design: list[dict], point: dict) -> float:
    """Distance from ``point`` to the nearest design value, in units of the declared ranges."""
    space = synthetic.field_spec(KIND, 32).param_space()
    unit = space.normalize(space.to_array(design))
    return float(np.linalg.norm(unit - space.normalize(space.to_array(point)), axis=1).min())


def true_fields(point: dict, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([synthetic.generate(KIND, point, size=32, rng=rng)[0] for _ in range(n)])


def train_model(encoder: str, fields: np.ndarray, points: list[dict], minutes: float, seed: int,
                work: Path, chunk: int = 200, steps: int | None = None) -> dict:
    """Train in chunks of ``chunk`` steps (at least one) until the wall-clock budget is spent
    (resuming exactly), or to exactly ``steps`` steps (a multiple of ``chunk``: the same model
    as a wall-clock run that reached that many, since each chunk resumes exactly); the
    checkpoint is written under ``work``."""
    spec = synthetic.field_spec(KIND, 32)
    model = RhoModel.create((32, 32), spec.param_space(), encoder=encoder, device="cpu")
    ckpt = work / f"sampler_nfe_{encoder}.pt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    if ckpt.exists():
        ckpt.unlink()
    total, t0, losses = 0, time.perf_counter(), []
    def more() -> bool:
        if steps is not None:
            return total < steps
        return total == 0 or time.perf_counter() - t0 < minutes * 60

    while more():
        total += chunk
        result = model.fit(fields, points, transform="log-standardize", steps=total, batch_size=32,
                           lr=1e-3, warmup_steps=min(200, chunk), lr_decay="constant", seed=seed,
                           checkpoint_path=ckpt, resume=total > chunk, progress=False,
                           checkpoint_every=chunk)
        losses += result.losses
        print(f"  [{encoder}] step {total}: loss {np.mean(result.losses[-50:]):.4f} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
        model = RhoModel.load(ckpt, device="cpu")
    inner = model.denoiser.net.cond_encoder.inner
    design = {}
    if isinstance(inner, FeatureEncoder):
        cond = model.param_space.to_array(points)
        design = {"n_frequencies": inner.n_frequencies,
                  "aliasing": fourier_aliasing(model.param_space, cond, inner.n_frequencies)}
    return {"model": model, "steps": total, "seconds": time.perf_counter() - t0,
            "final_loss": float(np.mean(losses[-200:])), "params_M": model.n_parameters / 1e6, **design}


def exact_denoiser_rows(scale: float, specs: list[str], nfes: list[int]) -> list[dict]:
    """The samplers' own error: each deterministic sampler run with the exact denoiser of the
    Gaussian log-field, no network and no Monte-Carlo error.

    In the network's normalized space ``z = (log rho - shift) / scale`` the log-field is Gaussian
    and diagonal in Fourier space with per-mode variances ``lambda_k / scale^2`` (the grid
    eigenvalues of :func:`synthetic.gaussian_random_field`), so its exact denoiser is
    ``D(z, sigma) = mu + lambda / (lambda + sigma^2) (z - mu)`` and a deterministic sampler maps
    every mode linearly: its gain, read off one run on a vector of ones, gives the generated
    per-mode variances. The lognormal spectrum follows exactly: with ``xi(r)`` the covariance of
    the log-field (inverse FFT of the variances) and the mean of the log-field exact, the
    covariance of rho is ``exp(xi'(0) - xi(0)) (exp(xi'(r)) - 1)``. Binned as the measured
    spectra, the error is what a perfect network would score with infinitely many samples.
    """
    from rho_workflow.diffusion.schedules import make_schedule, sampling_sigmas
    from rho_workflow.diffusion.samplers import get_sampler
    from rho_workflow.evaluate.spectra import shell_bins

    schedule = make_schedule("cosine", T=1000)
    idx, _, counts = shell_bins(32, synthetic.BOX_SIZE_MPC, 2)
    valid = idx >= 0

    def binned_lognormal_spectrum(log_var: np.ndarray, log_var_true: np.ndarray) -> np.ndarray:
        xi, xi_true = np.fft.ifftn(log_var).real, np.fft.ifftn(log_var_true).real
        cov = np.exp(xi[0, 0] - xi_true[0, 0]) * np.expm1(xi)
        power = np.fft.fftn(cov).real
        return np.bincount(idx[valid], weights=power[valid], minlength=len(counts)) / np.maximum(counts, 1)

    rows = []
    for label, point in POINTS.items():
        lam = synthetic._eigenvalues(point["index"], point["amplitude"], 32, synthetic.BOX_SIZE_MPC, 2,
                                     synthetic.K_PIVOT)
        z_var = torch.from_numpy(lam.reshape(1, -1) / scale ** 2)

        def denoiser(x: torch.Tensor, sigma: torch.Tensor, cond=None) -> torch.Tensor:
            return x * z_var / (z_var + sigma.to(torch.float64)[:, None] ** 2)

        p_true = binned_lognormal_spectrum(lam, lam)
        for spec in specs:
            sampler, spacing = spec.split(":")
            for target in nfes:
                steps = steps_for_nfe(sampler, target)
                if spacing == "fitted" and steps not in fitted_table().get(sampler, {}):
                    continue
                sigmas = sampling_sigmas(schedule, steps, spacing=spacing, sampler=sampler)
                gain = get_sampler(sampler)(denoiser, torch.ones_like(z_var), sigmas)[0].numpy()
                log_var = (gain ** 2 * (float(sigmas[0]) ** 2 + 1) * scale ** 2).reshape(lam.shape)
                p_gen = binned_lognormal_spectrum(log_var, lam)
                rows.append({"point": label, "sampler": sampler, "spacing": spacing, "steps": steps,
                             "nfe": nfe(sampler, steps), "exact_error_pct": 100 * float(spectrum_error(p_gen, p_true)),
                             "log_variance_ratio": float(log_var.sum() / lam.sum())})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-minutes", type=float, default=25.0)
    ap.add_argument("--train-steps", type=int, default=None,
                    help="train to exactly this many steps instead of for --train-minutes (a multiple of 200: "
                         "3200 remakes the committed models, whose 30-min runs reached 3200)")
    ap.add_argument("--hash-minutes", type=float, default=None, help="default: same as --train-minutes")
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--design", choices=["lhs", "grid"], default="lhs",
                    help="training parameter values: a Latin hypercube (--design-points values) or the 5 x 3 grid")
    ap.add_argument("--design-points", type=int, default=600, help="values of the Latin hypercube")
    ap.add_argument("--per-point", type=int, default=None,
                    help="training fields per parameter value (default: 3000 fields in all)")
    ap.add_argument("--nfe", type=int, nargs="+", default=[10, 12, 25, 50, 100])
    ap.add_argument("--samplers", nargs="+",
                    default=["ddim:discrete", "dpmpp_2m:log-snr", "dpmpp_2m:karras", "heun:karras",
                             "unipc:log-snr", "unipc:fitted", "dpmpp_2m:fitted"],
                    help="SAMPLER:SPACING pairs (a fitted spacing only at the step counts it has levels for)")
    ap.add_argument("--ddpm-steps", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (1 is robust when other processes share the cores)")
    ap.add_argument("--stage", choices=["all", "train", "sample", "spread", "merge", "exact", "restore"],
                    default="all",
                    help="train: fit and save both models; sample: evaluate saved models at --points "
                         "(one process per point uses both cores); spread: --spread-sampler at --spread-steps "
                         "with --spread-seeds, the Monte-Carlo spread of its figure; merge: combine the "
                         "per-point results; exact: only the exact-denoiser rows, into the existing result")
    ap.add_argument("--spread-seeds", type=int, nargs="+", default=[8, 9, 10, 11])
    ap.add_argument("--spread-steps", type=int, default=API_STEPS, help="steps of the spread stage (default: the API's)")
    ap.add_argument("--spread-sampler", default=":".join(API_DEFAULT), help="SAMPLER:SPACING of the spread stage")
    ap.add_argument("--samplers-only", action="store_true",
                    help="sample stage: only the --samplers rows (no DDPM reference, no hash model), kept "
                         "beside the rows of earlier sample runs")
    ap.add_argument("--points", nargs="+", default=list(POINTS), choices=list(POINTS))
    ap.add_argument("--encoders", nargs="+", default=["features", "hash"], choices=["features", "hash"],
                    help="models to train in this process (train stage; one process per encoder uses both cores)")
    add_output_options(ap, "sampler_nfe")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not args.smoke:
        return run(args, WORK, result_path("sampler_nfe", args))
    if args.stage != "all":
        ap.error("--smoke runs every stage in a temporary folder; leave out --stage")
    args.train_minutes, args.hash_minutes, args.samples, args.per_point = 0.0, 0.0, 4, 1
    args.nfe, args.ddpm_steps = [10], 20
    with tempfile.TemporaryDirectory(prefix="rho-bench-sampler-nfe-") as tmp:
        return run(args, Path(tmp), result_path("sampler_nfe", args), train_chunk=2, n_truth=256)


def run(args: argparse.Namespace, work: Path, out: Path, train_chunk: int = 200, n_truth: int = 4096) -> None:
    """The stage ``args.stage``, its files under ``work``; the merge writes ``out`` (and the
    table beside it). ``n_truth`` true fields give P_true."""
    hash_minutes = args.train_minutes if args.hash_minutes is None else args.hash_minutes
    torch.manual_seed(0)

    if args.stage == "merge":
        return merge(work, out)
    if args.stage == "exact":
        return exact_stage(args, out)
    if args.stage == "restore":
        return restore(out, work)
    trained = {}
    if args.stage in ("all", "train"):
        design = training_design(args.design, args.design_points)
        per_point = args.per_point or max(1, 3000 // len(design))
        fields = np.concatenate([true_fields(p, per_point, seed=i) for i, p in enumerate(design)])
        points = [p for p in design for _ in range(per_point)]
        for encoder in args.encoders:
            minutes = args.train_minutes if encoder == "features" else hash_minutes
            print(f"training the {encoder} model for {args.train_steps or minutes} "
                  f"{'steps' if args.train_steps else 'min'}", flush=True)
            trained[encoder] = train_model(encoder, fields, points, minutes, seed=0, work=work, steps=args.train_steps,
                                           chunk=train_chunk)
            info = {k: v for k, v in trained[encoder].items() if k != "model"}
            info.update(design=args.design, design_points=len(design), fields_per_point=per_point,
                        held_out_nearest_design_distance=nearest_distance(design, POINTS["held-out"]))
            (work / f"sampler_nfe_training_{encoder}.json").write_text(json.dumps(info, indent=2))
        if args.stage == "train":
            return
    else:
        needed = ["features"] if args.samplers_only or args.stage == "spread" else ["features", "hash"]
        for encoder in needed:
            trained[encoder] = {"model": RhoModel.load(work / f"sampler_nfe_{encoder}.pt", device="cpu")}

    box = synthetic.BOX_SIZE_MPC
    truth, floors = {}, {}
    for label in args.points:
        point = POINTS[label]
        _, p_true, _ = power_spectrum(true_fields(point, n_truth, seed=10_000), box, ndim=2)
        indep = true_fields(point, args.samples, seed=20_000)
        indep_b = true_fields(point, args.samples, seed=30_000)
        _, p_a, _ = power_spectrum(indep, box, ndim=2)
        _, p_b, _ = power_spectrum(indep_b, box, ndim=2)
        truth[label] = (p_true, float(true_fields(point, 512, seed=40_000).var()))
        floors[label] = {"vs_true": float(spectrum_error(p_a, p_true)), "a_vs_b": float(spectrum_error(p_a, p_b))}

    rows = []

    def evaluate(encoder: str, sampler: str, steps: int, label: str, spacing: str, seed: int = 7) -> dict:
        model, point = trained[encoder]["model"], POINTS[label]
        t0 = time.perf_counter()
        gen = model.sample(point, n=args.samples, sampler=sampler, steps=steps, seed=seed, batch_size=128,
                           spacing=spacing)[0, :, 0]
        seconds = time.perf_counter() - t0
        _, p_gen, _ = power_spectrum(gen, box, ndim=2)
        p_true, var_true = truth[label]
        err = float(spectrum_error(p_gen, p_true))
        row = {"encoder": encoder, "point": label, "sampler": sampler, "spacing": spacing, "steps": steps,
               "nfe": nfe(sampler, steps),
               "error_pct": 100 * err, "floor_pct": 100 * floors[label]["vs_true"],
               "var_ratio": float(gen.var() / var_true), "seconds": seconds, "seed": seed}
        print(table([row], list(row)), flush=True)
        return row

    if args.stage == "spread":
        sampler, spacing = args.spread_sampler.split(":")
        spread = [evaluate("features", sampler, args.spread_steps, label, spacing, seed=seed)
                  for label in args.points for seed in args.spread_seeds]
        steps_tag = "" if args.spread_steps == 25 else f"_{args.spread_steps}steps"
        (work / f"sampler_nfe_spread_{'_'.join(args.points)}_{sampler}_{spacing}{steps_tag}.json").write_text(
            json.dumps(spread, indent=2))
        return merge(work, out)
    for label in args.points:
        if not args.samplers_only:
            rows.append(evaluate("features", "ddpm", args.ddpm_steps, label, "discrete"))
        for spec in args.samplers:
            sampler, spacing = spec.split(":")
            for target in args.nfe:
                steps = steps_for_nfe(sampler, target)
                if spacing == "fitted" and steps not in fitted_table().get(sampler, {}):
                    continue
                rows.append(evaluate("features", sampler, steps, label, spacing))
    for label in args.points if not args.samplers_only else ():
        rows.append(evaluate("hash", "dpmpp_2m", 25, label, "log-snr"))
    part = {"machine": machine(), "args": {**vars(args), "out": str(out)}, "noise_floor": floors, "rows": rows}
    suffix = "_" + "_".join(spec.split(":")[0] for spec in args.samplers) if args.samplers_only else ""
    (work / f"sampler_nfe_rows_{'_'.join(args.points)}{suffix}.json").write_text(json.dumps(part, indent=2, default=float))
    merge(work, out)


def merge(work: Path, out: Path) -> None:
    """Combine the per-point row files under ``work`` into ``out`` (by default
    bench/results/sampler_nfe.json) with the goals, and the printed table beside it (.txt)."""
    parts = [json.loads(p.read_text()) for p in sorted(work.glob("sampler_nfe_rows_*.json"))]
    rows = [r for part in parts for r in part["rows"]]
    floors = {k: v for part in parts for k, v in part["noise_floor"].items()}
    training = {p.stem.rsplit("_", 1)[1]: json.loads(p.read_text())
                for p in sorted(work.glob("sampler_nfe_training_*.json"))}
    spread_rows = [r for p in sorted(work.glob("sampler_nfe_spread_*.json")) for r in json.loads(p.read_text())]
    spread = {}  # "point sampler spacing" (25 NFE) or "... at N NFE" -> the figure over all seeds measured
    for key in sorted({(r["point"], r["sampler"], r["spacing"], r["nfe"]) for r in spread_rows}):
        errs = [r["error_pct"] for r in rows + spread_rows if r["encoder"] == "features"
                and (r["point"], r["sampler"], r["spacing"], r["nfe"]) == key]
        name = " ".join(map(str, key[:3])) + ("" if key[3] == 25 else f" at {key[3]} NFE")
        spread[name] = {"seeds": len(errs), "error_pct": errs, "mean": float(np.mean(errs)),
                        "std": float(np.std(errs, ddof=1)), "min": min(errs), "max": max(errs)}
    goals = {"note": "a sampler's figure is its mean over the seeds of the spread stage where "
                     "that ran (seed 7 alone otherwise); DDPM-1000 is one seed",
             "api_default": f"{' '.join(API_DEFAULT)}, {API_DEFAULT_STEPS} steps"}
    for sampler, spacing in sorted({(r["sampler"], r["spacing"]) for r in rows
                                    if r["encoder"] == "features" and r["nfe"] == 25}):
        per_point = {}
        for label in floors:
            seeds = spread.get(f"{label} {sampler} {spacing}")
            single = [r for r in rows if r["encoder"] == "features" and r["point"] == label and r["nfe"] == 25
                      and (r["sampler"], r["spacing"]) == (sampler, spacing)]
            ref = [r for r in rows if r["encoder"] == "features" and r["point"] == label and r["sampler"] == "ddpm"]
            if not single or not ref:
                continue
            err = seeds["mean"] if seeds else single[0]["error_pct"]
            limit = max(5.0, 2 * single[0]["floor_pct"])
            per_point[label] = {"error_pct": err, "seeds": seeds["seeds"] if seeds else 1, "limit_pct": limit,
                                "ddpm_1000_pct": ref[0]["error_pct"], "meets_limit": err <= limit,
                                "within_1pp_of_ddpm": err <= ref[0]["error_pct"] + 1.0}
        if "train" in per_point and "held-out" in per_point:
            ratio = per_point["held-out"]["error_pct"] / per_point["train"]["error_pct"]
            per_point["held_out_over_train"] = ratio
            per_point["held_out_no_worse_than_1.5x"] = ratio <= 1.5
        goals[f"{sampler} {spacing} at 25 NFE"] = per_point
    for target in (10, 12):  # the goal of issue 14: <= 12 network calls within 1 point of DDPM-1000
        for sampler, spacing in sorted({(r["sampler"], r["spacing"]) for r in rows
                                        if r["encoder"] == "features" and r["nfe"] == target}):
            per_point = {}
            for label in floors:
                single = [r for r in rows if r["encoder"] == "features" and r["point"] == label
                          and r["nfe"] == target and (r["sampler"], r["spacing"]) == (sampler, spacing)]
                ref = [r for r in rows if r["encoder"] == "features" and r["point"] == label and r["sampler"] == "ddpm"]
                if single and ref:
                    seeds = spread.get(f"{label} {sampler} {spacing} at {target} NFE")
                    err = seeds["mean"] if seeds else single[0]["error_pct"]
                    per_point[label] = {"error_pct": err, "seeds": seeds["seeds"] if seeds else 1,
                                        "ddpm_1000_pct": ref[0]["error_pct"],
                                        "within_1pp_of_ddpm": err <= ref[0]["error_pct"] + 1.0}
            goals[f"{sampler} {spacing} at {target} NFE"] = per_point
    checkpoint = work / "sampler_nfe_features.pt"
    exact, exact_setup = [], {}
    if checkpoint.exists():
        affine = RhoModel.load(checkpoint, device="cpu").transform.to_dict()["steps"][-1]
        exact, exact_setup = exact_part(float(affine["scale"][0]), "the trained model's normalization")
    write(out, {
        "benchmark": "sampler_nfe", "machine": parts[0]["machine"] if parts else machine(),
        "smoke": any(part["args"].get("smoke", False) for part in parts),
        "args": [part["args"] for part in parts], "training": training,
        "noise_floor": floors, "rows": rows, "goals": goals, "prior_recipe": PRIOR_RECIPE,
        "four_octaves_run": FOUR_OCTAVES_RUN, "seed_spread_25_nfe": spread,
        "exact_denoiser": exact, "exact_denoiser_setup": exact_setup,
    })


def exact_part(scale: float, source: str) -> tuple[list[dict], dict]:
    """The exact-denoiser rows and how they were made (machine, normalization, seconds)."""
    t0 = time.perf_counter()
    rows = exact_denoiser_rows(scale, EXACT_SAMPLERS, EXACT_NFES)
    return rows, {"machine": machine(), "log_field_scale": scale, "scale_from": source,
                  "samplers": EXACT_SAMPLERS, "nfe": EXACT_NFES, "seconds": time.perf_counter() - t0}


def design_scale(design: str, design_points: int, per_point: int | None) -> float:
    """The scale of the log-standardize normalization that training on this design fits (the
    model's own recipe, on the same fields as the train stage), without training a model."""
    points = training_design(design, design_points)
    per_point = per_point or max(1, 3000 // len(points))
    fields = np.concatenate([true_fields(p, per_point, seed=i) for i, p in enumerate(points)])
    affine = RhoModel._fit_transform("log-standardize", fields[:, None], None).to_dict()["steps"][-1]
    return float(affine["scale"][0])


def restore(result: Path, work: Path) -> None:
    """Write the per-part files of a merged ``result`` back under ``work`` (rows per point and
    sampler list, training records, seed spreads), which are not committed, so that rows of a
    new ``sample`` or ``spread`` stage merge with the committed ones. The merge of the restored
    files alone reproduces ``result``'s rows, training records and spreads."""
    d = json.loads(result.read_text())
    work.mkdir(parents=True, exist_ok=True)
    start = 0  # the merge concatenates the parts in this order, each part's rows together
    for args in d["args"]:
        if args["stage"] != "sample":
            continue
        specs = {tuple(s.split(":")) for s in args["samplers"]}
        only = args.get("samplers_only", False)

        def belongs(r: dict) -> bool:
            if r["point"] not in args["points"]:
                return False
            if r["encoder"] == "hash" or r["sampler"] == "ddpm":
                return not only
            return (r["sampler"], r["spacing"]) in specs and r["steps"] in {
                steps_for_nfe(r["sampler"], n) for n in args["nfe"]}

        end, seen = start, set()  # a part holds one row per point, sampler, levels and steps
        while end < len(d["rows"]) and belongs(d["rows"][end]):
            key = tuple(d["rows"][end][k] for k in ("encoder", "point", "sampler", "spacing", "steps"))
            if key in seen:
                break
            seen.add(key)
            end += 1
        rows, start = d["rows"][start:end], end
        suffix = "_" + "_".join(s.split(":")[0] for s in args["samplers"]) if only else ""
        part = {"machine": d["machine"], "args": args, "rows": rows,
                "noise_floor": {p: d["noise_floor"][p] for p in args["points"]}}
        (work / f"sampler_nfe_rows_{'_'.join(args['points'])}{suffix}.json").write_text(json.dumps(part, indent=2))
    for encoder, info in d["training"].items():
        (work / f"sampler_nfe_training_{encoder}.json").write_text(json.dumps(info, indent=2))
    for name, spread in d["seed_spread_25_nfe"].items():
        key, _, calls = name.partition(" at ")
        point, sampler, spacing = key.split()
        nfe_ = int(calls.split()[0]) if calls else 25
        seven = {r["error_pct"] for r in d["rows"]
                 if (r["point"], r["sampler"], r["spacing"], r["nfe"]) == (point, sampler, spacing, nfe_)}
        rows = [{"encoder": "features", "point": point, "sampler": sampler, "spacing": spacing, "nfe": nfe_,
                 "steps": steps_for_nfe(sampler, nfe_), "error_pct": e, "seed": 8 + i}
                for i, e in enumerate(e for e in spread["error_pct"] if e not in seven)]
        tag = "" if nfe_ == 25 else f"_{nfe_}steps"
        (work / f"sampler_nfe_spread_{point}_{sampler}_{spacing}{tag}.json").write_text(json.dumps(rows, indent=2))
    print(f"restored the parts of {result} under {work}")


def exact_stage(args: argparse.Namespace, out: Path) -> None:
    """Recompute the exact-denoiser rows into ``out``, keeping the rest of the committed result."""
    payload = json.loads(out.read_text()) if out.exists() else {"benchmark": "sampler_nfe", "machine": machine(),
                                                                 "smoke": False, "rows": []}
    scale = design_scale(args.design, args.design_points, args.per_point)
    payload["exact_denoiser"], payload["exact_denoiser_setup"] = exact_part(
        scale, f"log-standardize fitted on the {args.design} training design's fields (no model trained)")
    write(out, payload)


def render(payload: dict) -> str:
    """The printed tables of a result."""
    cols = ["encoder", "point", "sampler", "spacing", "steps", "nfe", "error_pct", "floor_pct", "var_ratio", "seconds"]
    report = [table(payload.get("rows", []), cols)]
    report.append("\nprior recipe (issue #2, before this project):")
    report.append(table(PRIOR_RECIPE, ["sampler", "steps", "error_pct"]))
    report.append("\nfeatures encoder with 4 Fourier octaves (commit 58e7502), before the aliasing fix:")
    report.append(table(FOUR_OCTAVES_RUN, ["point", "sampler", "steps", "error_pct", "var_ratio"]))
    exact = payload.get("exact_denoiser", [])
    if exact:
        setup = payload.get("exact_denoiser_setup", {})
        where = f" (scale {setup['log_field_scale']:.5g}; {setup['machine']['cpu']}, " \
                f"{setup['machine']['date']}, commit {setup['machine']['git_commit']})" if setup else ""
        report.append("\nthe samplers alone: exact denoiser of the Gaussian log-field, no network, no Monte-Carlo "
                      f"error{where}:")
        report.append(table(exact, list(exact[0])))
    spread = payload.get("seed_spread_25_nfe", {})
    if spread:
        report.append("\nMonte-Carlo spread over seeds (error_pct; 25 NFE unless the name says otherwise):")
        report.append(table([{"point sampler spacing": k, **v} for k, v in spread.items()],
                            ["point sampler spacing", "seeds", "mean", "std", "min", "max"]))
    report.append("\ngoals: " + json.dumps(payload.get("goals", {}), indent=1))
    return "\n".join(report) + "\n"


def write(out: Path, payload: dict) -> None:
    """Write the JSON result and its printed tables beside it (.txt)."""
    text = render(payload)
    print(text, end="")
    path = write_result(out, payload)
    text_path = path.with_suffix(".txt")
    text_path.write_text(text)
    print(f"wrote {path} and {text_path}")


if __name__ == "__main__":
    main()
