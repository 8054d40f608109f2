"""Posterior benchmark: parameters inferred from 2D Gaussian random fields, and fields conditioned on stations.

Parameter inference. Held-out 32x32 fields are drawn with (index, amplitude) from the uniform
prior on the trained range, so that the exact posterior (the package's exact GRF density on a
dense grid) is the reference and calibration is measurable. Three posteriors per field:

* ``exact denoiser``: ``infer_field`` on a model whose denoiser is the exact conditional GRF
  denoiser (the method alone: bound K with stratified steps, antithetic noise, common random
  numbers, coarse-to-fine grid);
* ``trained model``: the same on a RhoModel trained here on a 48-point sweep;
* ``spectrum baseline``: what one would do without this package, a Gaussian likelihood of the
  binned power spectrum (8 bins, theta-dependent variance ``2 sum lambda^2 / n^2``).

For each: mean offset in exact standard deviations, width ratio to the exact posterior, and the
fraction of true parameters inside the 68% / 95% credible intervals (goals: |offset| <= 0.25,
width 0.8-1.25, coverage within 5 points of 68 and 95).

Conditioned sampling. The GRF at one parameter point observed at 1, 10 and 100 stations
(bilinear interpolation, error 0.1 field sd): the posterior mean and variance of the samples
against the kriging (Gaussian-process) posterior, with the exact denoiser and the trained
model. Cost: wall seconds per inferred field and per conditioned sample, on this CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_output_options, machine, result_path, table, write_result  # noqa: E402

from rho_workflow.api import RhoModel  # noqa: E402
from rho_workflow.data import synthetic  # noqa: E402
from rho_workflow.data.observations import Stations, interpolation_weights  # noqa: E402
from rho_workflow.data.synthetic.random_fields import (BOX_SIZE_MPC, K_PIVOT, circulant_eigenvalues,  # noqa: E402
                                                       gaussian_field_with_mean, wavenumber_grid)
from rho_workflow.diffusion.posterior import LinearObservation, ObservedDenoiser  # noqa: E402
from rho_workflow.diffusion.random import BatchGenerator  # noqa: E402
from rho_workflow.diffusion.samplers import get_sampler  # noqa: E402
from rho_workflow.diffusion.schedules import sampling_sigmas  # noqa: E402
from rho_workflow.training.inference import infer_field  # noqa: E402
from rho_workflow.training.reference import ExactGRFModel  # noqa: E402

FULL = {"size": 32, "held_out": 100, "train_points": 48, "per_point": 16, "train_steps": 2000, "T": 1000,
        "exact_grid": [10, 24], "exact_t": 64, "model_grid": [8, 14], "model_t": 32, "stations": [1, 10, 100],
        "cond_samples_exact": 512, "cond_samples_model": 128, "cond_steps": 25, "cg_iters": 12}
SMOKE = {"size": 8, "held_out": 3, "train_points": 4, "per_point": 2, "train_steps": 3, "T": 50,
         "exact_grid": [4, 6], "exact_t": 8, "model_grid": [3, 4], "model_t": 4, "stations": [1, 3],
         "cond_samples_exact": 16, "cond_samples_model": 4, "cond_steps": 5, "cg_iters": 3}
WORK = Path(__file__).resolve().parent / "work" / "inference_sections"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _prior_grid(space, n_grid: int) -> tuple[np.ndarray, np.ndarray]:
    """Cell centres of the uniform prior over (index, amplitude)."""
    u = (np.arange(n_grid) + 0.5) / n_grid
    return tuple(space[p].low + u * (space[p].high - space[p].low) for p in ("index", "amplitude"))


def exact_posterior(field: np.ndarray, space, n_grid: int = 160) -> dict:
    """Mean, sd and equal-tailed 68/95% intervals of each parameter under the exact density (uniform prior)."""
    idx, amp = _prior_grid(space, n_grid)
    ll = ExactGRFModel(field.shape[-1]).exact_log_likelihood(field, idx, amp)
    w = np.exp(ll - ll.max())
    w /= w.sum()
    return {"index": _marginal_summary(idx, w.sum(1)), "amplitude": _marginal_summary(amp, w.sum(0))}


def _marginal_summary(x: np.ndarray, p: np.ndarray) -> dict:
    mean = float((x * p).sum())
    sd = float(np.sqrt((p * (x - mean) ** 2).sum()))
    cdf = np.cumsum(p) - 0.5 * p
    q = np.interp([0.025, 0.16, 0.84, 0.975], cdf, x)
    return {"mean": mean, "sd": sd, "ci68": [float(q[1]), float(q[2])], "ci95": [float(q[0]), float(q[3])]}


def spectrum_posterior(field: np.ndarray, space, n_bins: int = 8, n_grid: int = 160) -> dict:
    """Posterior from a Gaussian likelihood of the binned power spectrum (the baseline)."""
    n = field.shape[-1]
    k = wavenumber_grid(n, BOX_SIZE_MPC, 2).reshape(-1)
    power = (np.abs(np.fft.fft2(field)) ** 2).reshape(-1) / (n * n)
    edges = np.linspace(k[k > 0].min() * 0.999, k.max() * 1.001, n_bins + 1)
    which = np.digitize(k, edges) - 1
    keep = (k > 0) & (which >= 0) & (which < n_bins)
    counts = np.bincount(which[keep], minlength=n_bins)
    est = np.bincount(which[keep], power[keep], minlength=n_bins) / counts
    idx, amp = _prior_grid(space, n_grid)
    dv = (BOX_SIZE_MPC / n) ** 2
    ll = np.empty((n_grid, n_grid))
    for i, ind in enumerate(idx):
        lam = amp[:, None] * (k[keep] / K_PIVOT) ** ind / dv  # (A, modes)
        mu = np.stack([np.bincount(which[keep], row, minlength=n_bins) for row in lam]) / counts
        var = 2 * np.stack([np.bincount(which[keep], row ** 2, minlength=n_bins) for row in lam]) / counts ** 2
        ll[i] = -0.5 * ((est - mu) ** 2 / var + np.log(2 * np.pi * var)).sum(-1)
    w = np.exp(ll - ll.max())
    w /= w.sum()
    return {"index": _marginal_summary(idx, w.sum(1)), "amplitude": _marginal_summary(amp, w.sum(0))}


def held_out(cfg: dict, space) -> list[tuple[dict, np.ndarray]]:
    rng = np.random.default_rng(2024)
    out = []
    for _ in range(cfg["held_out"]):
        theta = {"index": float(rng.uniform(space["index"].low, space["index"].high)),
                 "amplitude": float(rng.uniform(space["amplitude"].low, space["amplitude"].high))}
        out.append((theta, gaussian_field_with_mean(theta["index"], theta["amplitude"], cfg["size"], rng=rng)))
    return out


def train_model(cfg: dict):
    size = cfg["size"]
    space = synthetic.field_spec("gaussian-field", size).param_space()
    rng = np.random.default_rng(5)
    points = synthetic.default_points("gaussian-field", cfg["train_points"], rng)
    fields = np.stack([gaussian_field_with_mean(p["index"], p["amplitude"], size, rng=rng)
                       for p in points for _ in range(cfg["per_point"])])
    params = [p for p in points for _ in range(cfg["per_point"])]
    net = {"kind": "unet", "dims": 2, "in_channels": 1, "base_channels": 16, "channel_mults": [1, 2, 2],
           "num_res_blocks": 1, "attention_levels": []}
    model = RhoModel.create((size, size), space, network=net, T=cfg["T"], device="cpu")
    t0 = time.perf_counter()
    model.fit(fields, params, steps=cfg["train_steps"], batch_size=32, lr=1e-3, warmup_steps=100,
              progress=False, device="cpu")
    return model, time.perf_counter() - t0


def _row_stats(name: str, posts: list[dict], exacts: list[dict], thetas: list[dict], wall: float) -> dict:
    row = {"posterior": name, "fields": len(posts), "wall_s_per_field": wall / max(len(posts), 1)}
    for p in ("index", "amplitude"):
        off = np.array([(q[p]["mean"] - e[p]["mean"]) / e[p]["sd"] for q, e in zip(posts, exacts)])
        width = np.array([q[p]["sd"] / e[p]["sd"] for q, e in zip(posts, exacts)])
        c68 = np.mean([q[p]["ci68"][0] <= t[p] <= q[p]["ci68"][1] for q, t in zip(posts, thetas)])
        c95 = np.mean([q[p]["ci95"][0] <= t[p] <= q[p]["ci95"][1] for q, t in zip(posts, thetas)])
        row.update({f"{p}_offset_mean": float(off.mean()), f"{p}_offset_rms": float(np.sqrt((off ** 2).mean())),
                    f"{p}_width_ratio": float(np.median(width)), f"{p}_cover68": float(100 * c68),
                    f"{p}_cover95": float(100 * c95)})
    row["goals_met"] = bool(all(abs(row[f"{p}_offset_mean"]) <= 0.25 and row[f"{p}_offset_rms"] <= 0.5
                                and 0.8 <= row[f"{p}_width_ratio"] <= 1.25
                                and abs(row[f"{p}_cover68"] - 68) <= 5 and abs(row[f"{p}_cover95"] - 95) <= 5
                                for p in ("index", "amplitude")))
    return row


def inference_rows(cfg: dict, model, fields: list) -> tuple[list[dict], list[dict]]:
    space = model.param_space
    thetas = [t for t, _ in fields]
    log("exact posteriors and the spectrum baseline")
    exacts = [exact_posterior(f, space) for _, f in fields]
    t0 = time.perf_counter()
    spec = [spectrum_posterior(f, space) for _, f in fields]
    rows = [_row_stats("exact density (reference)", exacts, exacts, thetas, 0.0),
            _row_stats("power-spectrum baseline", spec, exacts, thetas, time.perf_counter() - t0)]
    exact_model = ExactGRFModel(cfg["size"], cfg["T"])
    per_field = []
    for label, m, (nc, ng), t_s in (("exact denoiser + infer_field", exact_model, cfg["exact_grid"], cfg["exact_t"]),
                                    ("trained model + infer_field", model, cfg["model_grid"], cfg["model_t"])):
        posts, t0 = [], time.perf_counter()
        for j, (_, f) in enumerate(fields):
            ds = infer_field(m, f, n_coarse=nc, n_grid=ng, seed=j, likelihood_options={"t_samples": t_s})
            posts.append(json.loads(ds.attrs["summary"]))
            if j % 10 == 0:
                log(f"{label}: field {j + 1}/{len(fields)}")
        rows.append(_row_stats(label, posts, exacts, thetas, time.perf_counter() - t0))
        per_field.append({"posterior": label, "summaries": posts})
    return rows, [{"thetas": thetas, "exact": exacts}] + per_field


# -- conditioned sampling against kriging ---------------------------------------------------------

def kriging(cov: np.ndarray, A: np.ndarray, y: np.ndarray, err: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    G = A @ cov @ A.T + np.diag(err ** 2)
    K = np.linalg.solve(G, A @ cov).T
    return K @ y, np.diag(cov) - np.einsum("ij,ji->i", K, A @ cov)


def conditioned_rows(cfg: dict, model) -> list[dict]:
    n = cfg["size"]
    theta = {"index": -2.0, "amplitude": 1.2}
    lam = circulant_eigenvalues(theta["index"], theta["amplitude"], n).reshape(-1)
    F = np.fft.fft2(np.eye(n * n).reshape(n * n, n, n)).reshape(n * n, n * n)
    cov = np.real(np.conj(F.T) @ (lam[:, None] * F)) / (n * n)
    cov = 0.5 * (cov + cov.T)
    rng = np.random.default_rng(8)
    truth = np.linalg.cholesky(cov + 1e-10 * np.eye(n * n)) @ rng.standard_normal(n * n)
    sd = float(np.sqrt(np.diag(cov).mean()))
    coords = np.arange(n, dtype=float)  # station positions in cell-index units (the models' default grid)
    rows = []
    exact = ExactGRFModel(n, cfg["T"])
    cond = torch.tensor([[theta["index"], theta["amplitude"]]], dtype=torch.float64)
    for m in cfg["stations"]:
        pos = {"x": rng.uniform(0, n - 1, m), "y": rng.uniform(0, n - 1, m)}
        idx, w = interpolation_weights(pos, ["x", "y"], {"x": coords, "y": coords})
        A = np.zeros((m, n * n))
        for r in range(m):
            np.add.at(A[r], idx[r], w[r])
        err = np.full(m, 0.1 * sd)
        y = A @ truth + err * rng.standard_normal(m)
        k_mean, k_var = kriging(cov, A, y, err)
        for label in ("exact denoiser", "trained model"):
            t0 = time.perf_counter()
            if label == "exact denoiser":
                count = cfg["cond_samples_exact"]
                den = ObservedDenoiser(exact._denoiser_for_sampling(), LinearObservation.build(idx, w, y, err), cg_iters=cfg["cg_iters"] * 3)
                sig = sampling_sigmas(exact.schedule, cfg["cond_steps"], "log-snr")
                gen = BatchGenerator(list(range(count)))
                x = gen.randn((1, n, n), dtype=torch.float64) * math.sqrt(float(sig[0]) ** 2 + 1)
                s = get_sampler("dpmpp_3m")(den, x, sig, cond=cond.expand(count, 2), generator=gen)
                samples = s.numpy().reshape(count, -1)
            else:
                count = cfg["cond_samples_model"]
                s = model.sample(theta, count, observe=Stations(pos, y, err), steps=cfg["cond_steps"],
                                 cg_iters=cfg["cg_iters"], batch_size=32)
                samples = s.reshape(count, -1)
            wall = time.perf_counter() - t0
            post_sd = np.sqrt(k_var)
            z = (samples.mean(0) - k_mean) / post_sd
            ratio = samples.var(0, ddof=1) / k_var
            near = (A > 0).any(0)
            rows.append({"stations": m, "sampler": label, "samples": count,
                         "mean_err_rms_over_kriging_sd": float(np.sqrt((z ** 2).mean())),
                         "mc_floor": float(1 / math.sqrt(count)),
                         "var_ratio_mean": float(ratio.mean()),
                         "var_ratio_at_stations": float(ratio[near].mean()),
                         "kriging_sd_over_prior_sd_at_stations": float((post_sd[near] / np.sqrt(np.diag(cov))[near]).mean()),
                         "wall_s_per_sample": wall / count})
            log(f"conditioned sampling: {m} stations, {label}: {rows[-1]['mean_err_rms_over_kriging_sd']:.3f}")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_output_options(ap, "inference")
    ap.add_argument("--resume", action="store_true",
                    help="reuse the trained model and the inference rows of an earlier run of the same sizes")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = SMOKE if args.smoke else FULL
    start = time.perf_counter()
    ckpt = WORK / ("smoke" if args.smoke else "full") / "grf_model.ckpt"
    if args.resume and ckpt.exists():
        model, train_s = RhoModel.load(ckpt, device="cpu"), float(json.loads(ckpt.with_suffix(".json").read_text())["s"])
        log(f"reused {ckpt}")
    else:
        log("training the conditional GRF model")
        model, train_s = train_model(cfg)
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        model.save(ckpt)
        write_result(ckpt.with_suffix(".json"), {"s": train_s})
        log(f"trained in {train_s:.0f} s")
    kept = ckpt.parent / "inference_rows.json"
    if args.resume and kept.exists() and json.loads(kept.read_text())["sizes"] == cfg:
        rows, per_field = (json.loads(kept.read_text())[k] for k in ("rows", "per_field"))
        log(f"reused the inference rows of {kept}")
    else:
        rows, per_field = inference_rows(cfg, model, held_out(cfg, model.param_space))
        write_result(kept, {"sizes": cfg, "rows": rows, "per_field": per_field})
    cond_rows = conditioned_rows(cfg, model)
    cols = ["posterior", "fields", "index_offset_mean", "index_offset_rms", "index_width_ratio", "index_cover68",
            "index_cover95", "amplitude_offset_mean", "amplitude_offset_rms", "amplitude_width_ratio",
            "amplitude_cover68", "amplitude_cover95", "wall_s_per_field", "goals_met"]
    text = "\n\n".join([
        f"Parameter inference, {cfg['size']}x{cfg['size']} GRF, {cfg['held_out']} held-out fields, theta ~ prior "
        "(offset: posterior mean - exact mean in exact sd; width: sd ratio; cover: % of true theta in the CI)",
        table(rows, cols),
        "Conditioned sampling against kriging (GRF index -2, amplitude 1.2; errors 0.1 sd)",
        table(cond_rows, ["stations", "sampler", "samples", "mean_err_rms_over_kriging_sd", "mc_floor",
                          "var_ratio_mean", "var_ratio_at_stations", "kriging_sd_over_prior_sd_at_stations",
                          "wall_s_per_sample"]),
        f"model trained {cfg['train_steps']} steps in {train_s:.0f} s ({model.n_parameters / 1e6:.2f} M parameters)",
    ])
    print(text)
    path = result_path("inference", args)
    payload = {"benchmark": "inference", "machine": machine(), "smoke": args.smoke, "sizes": cfg,
               "train_seconds": train_s, "inference": rows, "conditioned_sampling": cond_rows,
               "per_field": per_field, "wall_seconds": time.perf_counter() - start}
    write_result(path, payload)
    path.with_suffix(".txt").write_text(text + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
