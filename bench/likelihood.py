"""Likelihoods of the Sohl-Dickstein et al. 2015 benchmarks: the bound K, the exact ODE density, baselines.

Three problems, each on held-out data, one torch thread:

* **Swiss roll** (2D, scaled to unit variance per axis): ``theta = 1.5 pi (1 + 2u)``,
  ``u ~ U(0, 1)``, point ``(theta cos theta, theta sin theta) + N(0, NOISE^2 I)`` (the
  scikit-learn ``make_swiss_roll`` curve, in the plane). The paper does not state its
  generator's noise, so its 2.35 bits are a reference, not a like-for-like target; the
  *truth* row (the generator's exact density by quadrature over ``u``) is. Rows: the bound K
  (T = 1000 cosine steps, summed exactly) and K - L_null in bits beside the paper's 2.35 and
  6.45, the exact ODE log-likelihood, scipy's ``gaussian_kde`` (Scott's and a validated
  bandwidth) and a zuko neural spline flow trained with the same steps and batch.
* **Binary heartbeat**: length 20, a 1 every fifth bin at a uniformly random phase (truth
  ``log2(1/5) = -2.322`` bits); binomial diffusion with T = 2000, an MLP of 3 x 50; K against
  the paper's -2.414.
* **Gaussian random fields** 32 x 32 (``make-data gaussian-field``) with a conditional
  RhoModel; the generator's fields have zero mean (a density on a 1023-dim subspace), so each
  gets an independent k = 0 mode ``c ~ N(0, lambda_1)`` (``lambda_1`` the fundamental
  mode's eigenvalue) and the exact density on R^1024 is ``gaussian_field_log_density(...,
  zero_mean="project") + log N(c; 0, lambda_1)``. NLL in bits/dim by the ODE and the bound
  against the exact NLL of the same held-out fields, at a training point and a held-out point.

    .venv/bin/python bench/likelihood.py [--smoke] [--out PATH] [--resume]

Each finished section is kept in ``bench/work/likelihood_sections/`` (git-ignored);
``--resume`` reuses those of the same sizes instead of recomputing them.
"""

from __future__ import annotations

import argparse
import copy
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
from rho_workflow.diffusion.binomial import FlipRateNet, binomial_bound, binomial_loss  # noqa: E402
from rho_workflow.diffusion.likelihood import log_prob, null_log_prob  # noqa: E402
from rho_workflow.diffusion.precond import Denoiser  # noqa: E402
from rho_workflow.diffusion.random import BatchGenerator  # noqa: E402
from rho_workflow.diffusion.schedules import make_schedule  # noqa: E402
from rho_workflow.models.mlp import MLPNet  # noqa: E402
from rho_workflow.training.likelihood import field_log_prob  # noqa: E402
from rho_workflow.training.trainer import TrainConfig, train  # noqa: E402

LN2 = math.log(2.0)
NOISE = 0.5  # Swiss roll noise, raw units (the curve spans |x| < 14)
PAPER = {"swiss_roll_K_bits": 2.35, "swiss_roll_K_minus_null_bits": 6.45, "heartbeat_K_bits": -2.414,
         "heartbeat_truth_bits": math.log2(1 / 5)}
FULL = {"roll_train": 50000, "roll_test": 2000, "roll_steps": 8000, "roll_T": 1000, "beat_steps": 20000,
        "beat_T": 2000, "beat_test": 1000, "grf_points": 48, "grf_per_point": 16, "grf_steps": 2000,
        "grf_test": 8, "grf_size": 32, "grf_T": 1000}
SMOKE = {"roll_train": 2000, "roll_test": 64, "roll_steps": 30, "roll_T": 20, "beat_steps": 30, "beat_T": 20,
         "beat_test": 32, "grf_points": 4, "grf_per_point": 2, "grf_steps": 3, "grf_test": 2, "grf_size": 8,
         "grf_T": 20}


def log(message: str) -> None:
    """Progress on stderr (the table goes to stdout at the end)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def bits(nats: np.ndarray) -> tuple[float, float]:
    """Mean and its standard error, nats -> bits."""
    v = np.asarray(nats, dtype=np.float64) / LN2
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v)))


# -- Swiss roll ---------------------------------------------------------------------------------

def roll_raw(n: int, rng: np.random.Generator) -> np.ndarray:
    theta = 1.5 * np.pi * (1 + 2 * rng.uniform(size=n))
    return np.stack([theta * np.cos(theta), theta * np.sin(theta)], 1) + NOISE * rng.standard_normal((n, 2))


def roll_scaling() -> tuple[np.ndarray, np.ndarray]:
    """Mean and std per axis of the generator (1e6 draws, fixed seed): the unit-variance scaling."""
    x = roll_raw(1_000_000, np.random.default_rng(12345))
    return x.mean(0), x.std(0)


def roll_true_log_density(z: np.ndarray, mean: np.ndarray, std: np.ndarray, m: int = 20000) -> np.ndarray:
    """``log p(z)`` of the scaled roll: ``log (1/M) sum_j N(x; c(u_j), NOISE^2 I) + sum log std`` (midpoint rule in u)."""
    x = z * std + mean
    theta = 1.5 * np.pi * (1 + 2 * (np.arange(m) + 0.5) / m)
    c = np.stack([theta * np.cos(theta), theta * np.sin(theta)], 1)
    out = np.empty(len(x))
    for lo in range(0, len(x), 256):
        d2 = ((x[lo:lo + 256, None, :] - c[None]) ** 2).sum(-1)
        a = -0.5 * d2 / NOISE ** 2
        amax = a.max(1, keepdims=True)
        out[lo:lo + 256] = (amax[:, 0] + np.log(np.exp(a - amax).mean(1)) - math.log(2 * math.pi * NOISE ** 2))
    return out + np.log(std).sum()


def train_point_denoiser(x: torch.Tensor, steps: int, batch: int) -> tuple[Denoiser, float]:
    """A residual MLP diffusion model (the package's MLPNet, v-prediction, EMA) of 2D points."""
    torch.manual_seed(0)
    denoiser = Denoiser(MLPNet(2, hidden=128, depth=4), prediction="v", sigma_data=1.0)
    cfg = TrainConfig(steps=steps, batch_size=batch, lr=1e-3, warmup_steps=min(200, steps // 10 + 1),
                      ema_decay=0.999, device="cpu", log_every=10 ** 9, checkpoint_every=10 ** 9)
    t0 = time.perf_counter()
    _, ema = train(denoiser, make_schedule("cosine", T=1000), x, None, cfg, progress=False)
    seconds = time.perf_counter() - t0
    final = copy.deepcopy(denoiser)
    final.net.load_state_dict(ema.state_dict())
    return final.eval(), seconds


def train_flow(x: torch.Tensor, steps: int, batch: int):
    """zuko's neural spline flow (Durkan et al. 2019), Adam with the diffusion model's steps and batch."""
    import zuko

    torch.manual_seed(0)
    flow = zuko.flows.NSF(features=2, context=0, transforms=4, hidden_features=(128, 128))
    opt = torch.optim.Adam(flow.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(1)
    t0 = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(len(x), (batch,), generator=g)
        loss = -flow().log_prob(x[idx].float()).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return flow, time.perf_counter() - t0


def flow_baseline(x: torch.Tensor, xt: torch.Tensor, steps: int) -> tuple[np.ndarray | None, float | None, float]:
    """The flow's held-out log-likelihoods (nats), training and evaluation seconds; None without zuko."""
    try:
        flow, seconds = train_flow(x, steps, 512)
    except ImportError:
        return None, None, 0.0
    with torch.no_grad():
        t0 = time.perf_counter()
        values = flow().log_prob(xt.float()).double().numpy()
    return values, seconds, time.perf_counter() - t0


def kde_values(train_z: np.ndarray, test_z: np.ndarray) -> list[tuple[str, np.ndarray, float]]:
    """scipy gaussian_kde with Scott's bandwidth, and the best of a few factors on a validation split."""
    from scipy.stats import gaussian_kde

    fit, val = train_z[: len(train_z) * 4 // 5], train_z[len(train_z) * 4 // 5:]
    scott = gaussian_kde(fit.T)
    factors = [scott.factor * f for f in (0.125, 0.25, 0.5, 1.0)]
    scores = [gaussian_kde(fit.T, bw_method=f).logpdf(val[:2000].T).mean() for f in factors]
    best = factors[int(np.argmax(scores))]
    out = []
    for name, bw in (("gaussian_kde (Scott)", None), (f"gaussian_kde (validated bw={best:.3g})", best)):
        t0 = time.perf_counter()
        values = gaussian_kde(train_z.T, bw_method=bw).logpdf(test_z.T)
        out.append((name, values, time.perf_counter() - t0))
    return out


def _row(name: str, values: np.ndarray, truth: np.ndarray, **extra) -> dict:
    """Mean log-likelihood (bits) with its standard error, and the paired difference to the truth."""
    mean, se = bits(values)
    diff, diff_se = bits(values - truth)
    return {"model": name, "log_lik_bits": mean, "se_bits": se, "minus_truth_bits": diff,
            "minus_truth_se": diff_se, **extra, "_values": values}


def swiss_roll(cfg: dict) -> dict:
    mean, std = roll_scaling()
    rng = np.random.default_rng(0)
    train_z = (roll_raw(cfg["roll_train"], rng) - mean) / std
    test_z = (roll_raw(cfg["roll_test"], rng) - mean) / std
    x, xt = torch.from_numpy(train_z), torch.from_numpy(test_z)
    log("swiss roll: training the diffusion model")
    denoiser, train_s = train_point_denoiser(x, cfg["roll_steps"], 512)
    log(f"swiss roll: trained in {train_s:.0f} s; bound and ODE")
    schedule = make_schedule("cosine", T=cfg["roll_T"])
    truth, null = roll_true_log_density(test_z, mean, std), null_log_prob(xt)
    bound = log_prob(denoiser, schedule, xt, method="bound", generator=BatchGenerator(range(len(xt))), n_noise=4)
    ode = [log_prob(denoiser, schedule, xt[lo:lo + 500], method="ode") for lo in range(0, len(xt), 500)]
    log("swiss roll: training the flow")
    flow_values, flow_s, flow_wall = flow_baseline(x, xt, cfg["roll_steps"])
    rows = [_row("truth (generator density, quadrature)", truth, truth),
            _row("diffusion: bound K (T=%d, all steps)" % cfg["roll_T"], bound.values, truth,
                 K_minus_null_bits=bits(bound.values - null)[0], nfe_per_sample=bound.nfe,
                 wall_s_per_sample=bound.wall_s / len(xt)),
            _row("diffusion: exact ODE", np.concatenate([r.values for r in ode]), truth,
                 nfe_per_sample=max(r.nfe for r in ode), wall_s_per_sample=sum(r.wall_s for r in ode) / len(xt))]
    if flow_values is None:
        rows.append({"model": "zuko NSF: not run, zuko is not installed (pip install -e .[bench])"})
    else:
        rows.append(_row("zuko NSF (same steps, batch)", flow_values, truth, wall_s_per_sample=flow_wall / len(xt)))
    rows += [_row(name, v, truth, wall_s_per_sample=w / len(xt)) for name, v, w in kde_values(train_z, test_z)]
    rows.append(_row("null N(0, I)", null, truth))
    goals = _roll_goals(rows, truth)
    for r in rows:
        r.pop("_values", None)
    return {"generator": "theta = 1.5 pi (1 + 2u), (theta cos theta, theta sin theta) + N(0, %.2g^2 I), "
                         "standardized per axis" % NOISE,
            "rows": rows, "train_seconds": {"diffusion": train_s, "flow": flow_s},
            "bound_terms_bits": {"prior": bits(bound.prior)[0], "decoder": bits(bound.decoder)[0],
                                 "kl_sum": bits(bound.kl.sum(1))[0], "n_noise": 4},
            "goals": goals}


def _roll_goals(rows: list[dict], truth: np.ndarray) -> dict:
    """K >= 2.35 bits (and whether the generator allows it); is the ODE the best density estimator?"""
    k = rows[1]["log_lik_bits"]
    estimators = [r for r in rows[2:] if "_values" in r and not r["model"].startswith("null")]
    ranked = sorted(estimators, key=lambda r: -r["log_lik_bits"])
    ode = rows[2]
    other = ranked[1] if ranked[0] is ode else ranked[0]
    lead, lead_se = bits(ode["_values"] - other["_values"])
    verdict = ("best" if lead > 2 * lead_se else "tied within 2 standard errors" if lead > -2 * lead_se
               else "not best")
    return {"K_ge_2.35_bits": bool(k >= PAPER["swiss_roll_K_bits"]),
            "K_note": "the generator's own mean log-likelihood on these points is %.3f bits, so no model can "
                      "reach 2.35 here; the paper's roll (noise not stated) is thinner" % bits(truth)[0],
            "ode_vs_best_other": {"other": other["model"], "ode_minus_other_bits": lead, "se": lead_se},
            "ode_is_best_row": verdict}


# -- binary heartbeat -----------------------------------------------------------------------------

def heartbeats(n: int, g: torch.Generator, length: int = 20, period: int = 5) -> torch.Tensor:
    phase = torch.randint(period, (n, 1), generator=g)
    return ((torch.arange(length)[None, :] - phase) % period == 0).to(torch.float64)


def heartbeat(cfg: dict) -> dict:
    log("heartbeat: training")
    torch.manual_seed(0)
    T = cfg["beat_T"]
    net = FlipRateNet(20, T, hidden=50, depth=3)
    g = torch.Generator().manual_seed(2)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg["beat_steps"])
    t0 = time.perf_counter()
    for _ in range(cfg["beat_steps"]):
        loss = binomial_loss(net, heartbeats(256, g), generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    train_s = time.perf_counter() - t0
    net.eval()
    test = heartbeats(cfg["beat_test"], torch.Generator().manual_seed(3))
    res = binomial_bound(net.reverse, test, T, generator=torch.Generator().manual_seed(4), n_noise=2)
    mean, se = bits(res.values)
    truth = PAPER["heartbeat_truth_bits"]
    return {"T": T, "network": "FlipRateNet 3 x 50 (x0-parametrized flip rate)", "train_steps": cfg["beat_steps"],
            "train_seconds": train_s, "K_bits": mean, "se_bits": se, "truth_bits": truth,
            "paper_K_bits": PAPER["heartbeat_K_bits"], "nfe_per_sample": res.nfe,
            "wall_s_per_sample": res.wall_s / len(test),
            "goals": {"closer_to_truth_than_paper": abs(mean - truth) < abs(PAPER["heartbeat_K_bits"] - truth)}}


# -- Gaussian random fields ----------------------------------------------------------------------

def fundamental_eigenvalue(index: float, amplitude: float, size: int) -> float:
    """``lambda_1 = P(2 pi / L) / dV``, the grid covariance eigenvalue of the fundamental mode."""
    k1 = 2 * math.pi / synthetic.BOX_SIZE_MPC
    p = synthetic.power_law_spectrum(np.array([k1]), index, amplitude)[0]
    return float(p / (synthetic.BOX_SIZE_MPC / size) ** 2)


def grf_fields(point: dict, n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` fields of the package generator at ``point``, each with an independent k = 0 mode."""
    lam1 = fundamental_eigenvalue(point["index"], point["amplitude"], size)
    out = []
    for _ in range(n):
        field, _ = synthetic.generate("gaussian-field", point, size=size, rng=rng)
        out.append(field + math.sqrt(lam1) * rng.standard_normal() / size)
    return np.stack(out)


def grf_exact(fields: np.ndarray, point: dict) -> np.ndarray:
    """Exact log-density on R^(N^2): the zero-mean part's (package) plus the k = 0 mode's, nats."""
    size = fields.shape[-1]
    lam1 = fundamental_eigenvalue(point["index"], point["amplitude"], size)
    c = fields.sum(axis=(-1, -2)) / size  # orthonormal coefficient of the constant mode
    rest = synthetic.gaussian_field_log_density(fields, point["index"], point["amplitude"], ndim=2,
                                                zero_mean="project")
    return rest - 0.5 * c ** 2 / lam1 - 0.5 * math.log(2 * math.pi * lam1)


def train_grf_model(cfg: dict):
    size = cfg["grf_size"]
    space = synthetic.field_spec("gaussian-field", size).param_space()
    rng = np.random.default_rng(5)
    points = synthetic.default_points("gaussian-field", cfg["grf_points"], rng)
    fields = np.concatenate([grf_fields(p, cfg["grf_per_point"], size, rng) for p in points])
    params = [p for p in points for _ in range(cfg["grf_per_point"])]
    net = {"kind": "unet", "dims": 2, "in_channels": 1, "base_channels": 16, "channel_mults": [1, 2, 2],
           "num_res_blocks": 1, "attention_levels": []}
    model = RhoModel.create((size, size), space, network=net, T=cfg["grf_T"], device="cpu")
    t0 = time.perf_counter()
    model.fit(fields, params, steps=cfg["grf_steps"], batch_size=32, lr=1e-3, warmup_steps=100,
              progress=False, device="cpu")
    return model, points, time.perf_counter() - t0


def grf_row(model, point: dict, label: str, cfg: dict, rng: np.random.Generator) -> dict:
    fields = grf_fields(point, cfg["grf_test"], cfg["grf_size"], rng)
    dim = cfg["grf_size"] ** 2
    exact = -grf_exact(fields, point) / (dim * LN2)
    ode = field_log_prob(model, fields, point, method="ode", unit="bits_per_dim", batch_size=cfg["grf_test"],
                         rtol=1e-4, atol=1e-4, n_probes=2)
    bound = field_log_prob(model, fields, point, method="bound", unit="bits_per_dim", batch_size=cfg["grf_test"])
    gap, gap_b = -ode.values - exact, -bound.values - exact
    se = lambda v: float(v.std(ddof=1) / math.sqrt(len(v)))  # noqa: E731
    return {"point": label, **{k: round(float(v), 4) for k, v in point.items()},
            "exact_nll_bpd": float(exact.mean()), "ode_nll_bpd": float(-ode.values.mean()),
            "ode_gap_bpd": float(gap.mean()), "ode_gap_se": se(gap), "bound_nll_bpd": float(-bound.values.mean()),
            "bound_gap_bpd": float(gap_b.mean()), "bound_gap_se": se(gap_b),
            "ode_nfe_per_sample": ode.nfe_per_sample, "ode_wall_s_per_sample": ode.wall_s / len(fields),
            "bound_nfe_per_sample": bound.nfe_per_sample, "bound_wall_s_per_sample": bound.wall_s / len(fields),
            "goal_gap_le_0.05": bool(gap.mean() <= 0.05)}


def random_fields(cfg: dict) -> dict:
    log("random fields: training the conditional RhoModel")
    model, points, train_s = train_grf_model(cfg)
    log(f"random fields: trained in {train_s:.0f} s; ODE and bound at two points")
    held_out = {"index": -2.05, "amplitude": 1.3}
    nearest = min(math.hypot((p["index"] - held_out["index"]) / 2, (p["amplitude"] - held_out["amplitude"]) / 1.5)
                  for p in points)
    rng = np.random.default_rng(7)
    rows = [grf_row(model, points[0], "training point", cfg, rng), grf_row(model, held_out, "held-out point", cfg, rng)]
    return {"size": cfg["grf_size"], "design_points": len(points), "fields_per_point": cfg["grf_per_point"],
            "train_steps": cfg["grf_steps"], "train_seconds": train_s, "params_M": model.n_parameters / 1e6,
            "held_out_nearest_normalized_distance": nearest, "k0_mode": "c ~ N(0, lambda_1) added to each field",
            "ode": "Hutchinson, 2 Rademacher probes, rtol=atol=1e-4", "rows": rows}


# -- main ----------------------------------------------------------------------------------------

SECTIONS = Path(__file__).resolve().parent / "work" / "likelihood_sections"


def run_section(name: str, fn, cfg: dict, args: argparse.Namespace) -> dict:
    """``fn(cfg)``, kept as JSON; with ``--resume`` a kept result of the same sizes is reused."""
    path = SECTIONS / ("smoke" if args.smoke else "full") / f"{name}.json"
    if args.resume and path.exists():
        kept = json.loads(path.read_text())
        if kept.get("sizes") == cfg:
            log(f"{name}: reused {path}")
            return kept["result"]
    result = fn(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_result(path, {"sizes": cfg, "result": result})
    return json.loads(path.read_text())["result"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_output_options(ap, "likelihood")
    ap.add_argument("--resume", action="store_true", help="reuse the sections kept by an earlier run")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = SMOKE if args.smoke else FULL
    start = time.perf_counter()
    roll, beat, grf = (run_section(name, fn, cfg, args) for name, fn in
                       (("swiss_roll", swiss_roll), ("heartbeat", heartbeat), ("gaussian_fields", random_fields)))
    text = "\n\n".join([
        "Swiss roll (bits per sample; paper: K = 2.35, K - L_null = 6.45)",
        table(roll["rows"], ["model", "log_lik_bits", "se_bits", "minus_truth_bits", "minus_truth_se",
                             "K_minus_null_bits", "nfe_per_sample", "wall_s_per_sample"]),
        "ODE vs the best other estimator: %s" % roll["goals"]["ode_is_best_row"],
        "Binary heartbeat (bits per sequence)",
        table([{"model": "binomial diffusion bound K", "bits": beat["K_bits"], "se": beat["se_bits"],
                "nfe_per_sample": beat["nfe_per_sample"]},
               {"model": "paper (Sohl-Dickstein 2015) K", "bits": beat["paper_K_bits"]},
               {"model": "truth log2(1/5)", "bits": beat["truth_bits"]}], ["model", "bits", "se", "nfe_per_sample"]),
        "Gaussian random fields %dx%d (NLL, bits/dim)" % (grf["size"], grf["size"]),
        table(grf["rows"], ["point", "exact_nll_bpd", "ode_nll_bpd", "ode_gap_bpd", "ode_gap_se", "bound_nll_bpd",
                            "bound_gap_bpd", "ode_nfe_per_sample", "ode_wall_s_per_sample", "bound_wall_s_per_sample"]),
    ])
    goals = {"swiss_roll_K_ge_2.35_bits": roll["goals"]["K_ge_2.35_bits"],
             "swiss_roll_ode_best_row": roll["goals"]["ode_is_best_row"],
             "heartbeat_closer_to_truth_than_paper": beat["goals"]["closer_to_truth_than_paper"],
             **{f"grf_ode_gap_le_0.05_bpd_{r['point'].replace(' ', '_')}": r["goal_gap_le_0.05"] for r in grf["rows"]}}
    text += "\n\nGoals: " + ", ".join(f"{k}: {v}" for k, v in goals.items())
    print(text)
    path = result_path("likelihood", args)
    payload = {"benchmark": "likelihood", "machine": machine(), "smoke": args.smoke, "sizes": cfg,
               "paper": PAPER, "goals": goals, "swiss_roll": roll, "heartbeat": beat, "gaussian_fields": grf,
               "wall_seconds": time.perf_counter() - start}
    write_result(path, payload)
    path.with_suffix(".txt").write_text(text + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
