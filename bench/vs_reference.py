"""Side by side with the rho-Diffusion reference recipe at the same wall-clock training budget.

The reference recipe (Cai & Lee 2023; github.com/intel/rho-diffusion) is implemented here, in the
benchmark and not in the package: its UNetv2 shape (an ADM-style U-Net: model_channels 32,
channel_mult (1, 2, 4, 8), two res blocks per level, self-attention at downsample factor 8 and
in the middle block; about 15.9M parameters at 32x32 in 2D), conditioning by the SHA-512 code
of the parameter dict added to the time embedding, a linear beta schedule 1e-3..0.02 over 1000
steps, the epsilon loss, AdamW at lr 1e-4, and its sampler: 1000 ancestral steps with the noise
scaled by 0.8 and the state clamped to [-1, 1] after every step, on data scaled to [-1, 1]
(here: the log-density, min-max over the training set). The package's default
(``RhoModel.create(..., encoder="features")``, log-standardize, its default sampler) is
trained for the same wall-clock seconds on the same 2D lognormal sweep, one after the other.
The clock is the process's CPU time on one torch thread, which equals wall-clock time on an
idle core and stays fair when other work shares the machine.

Reported per model: spectrum error with its noise floor, W1 and variance ratio at a training
and a held-out point (rho_workflow.evaluate.point_metrics), sampling samples/s and the time to
sample a 64-point x 16-member sweep (the reference's timed on a few samples and scaled, since
1000 steps of 1024 fields would take hours on a CPU; the JSON says so).

    .venv/bin/python bench/vs_reference.py [--smoke] [--budget-s 900] [--members 16] [--out PATH]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_output_options, machine, result_path, table, write_result  # noqa: E402

from rho_workflow.api import RhoModel  # noqa: E402
from rho_workflow.data import synthetic  # noqa: E402
from rho_workflow.evaluate.point_metrics import point_metrics  # noqa: E402
from rho_workflow.models.hash_encoder import sha512_code  # noqa: E402
from rho_workflow.params import Parameter, ParamSpace  # noqa: E402

SPACE = ParamSpace([Parameter("index", "1", low=-3.0, high=-1.0),
                    Parameter("amplitude", "Mparsec2", low=0.5, high=2.0)])


# ------------------------------------------------------------------ the reference UNetv2

def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of the integer step (Ho et al. 2020; ADM's ``timestep_embedding``)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


def norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, ch), ch)  # ADM: 32 groups (channels are multiples of 32)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb: int, dropout: float = 0.0):
        super().__init__()
        self.in_layers = nn.Sequential(norm(cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1))
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb, cout))
        self.out_layers = nn.Sequential(norm(cout), nn.SiLU(), nn.Dropout(dropout),
                                        nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x, e):
        h = self.in_layers(x) + self.emb(e)[:, :, None, None]
        return self.skip(x) + self.out_layers(h)


class Attention(nn.Module):
    def __init__(self, ch: int, heads: int = 4):
        super().__init__()
        self.heads, self.norm = heads, norm(ch)
        self.qkv, self.proj = nn.Conv1d(ch, 3 * ch, 1), nn.Conv1d(ch, ch, 1)

    def forward(self, x, e=None):
        b, c, *sp = x.shape
        q, k, v = self.qkv(self.norm(x).reshape(b, c, -1)).reshape(b * self.heads, 3 * c // self.heads, -1).chunk(3, 1)
        w = torch.softmax(torch.einsum("bct,bcs->bts", q, k) / math.sqrt(q.shape[1]), dim=-1)
        h = torch.einsum("bts,bcs->bct", w, v).reshape(b, c, -1)
        return x + self.proj(h).reshape(b, c, *sp)


class Step(nn.Sequential):
    def forward(self, x, e):
        for layer in self:
            x = layer(x, e) if isinstance(layer, (ResBlock, Attention)) else layer(x)
        return x


class ReferenceUNet(nn.Module):
    """ADM-style U-Net in the shape of rho-Diffusion's UNetv2 (see the module docstring)."""

    def __init__(self, mc: int = 32, mult=(1, 2, 4, 8), res_blocks: int = 2, attn_ds=(8,),
                 cond_dim: int = 128):
        super().__init__()
        emb = 4 * mc
        self.mc = mc
        self.time = nn.Sequential(nn.Linear(mc, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.cond = nn.Linear(cond_dim, emb)
        self.down = nn.ModuleList([Step(nn.Conv2d(1, mc, 3, padding=1))])
        chans, ch, ds = [mc], mc, 1
        for level, m in enumerate(mult):
            for _ in range(res_blocks):
                layers = [ResBlock(ch, m * mc, emb)]
                ch = m * mc
                if ds in attn_ds:
                    layers.append(Attention(ch))
                self.down.append(Step(*layers))
                chans.append(ch)
            if level < len(mult) - 1:
                self.down.append(Step(nn.Conv2d(ch, ch, 3, stride=2, padding=1)))
                chans.append(ch)
                ds *= 2
        self.middle = Step(ResBlock(ch, ch, emb), Attention(ch), ResBlock(ch, ch, emb))
        self.up = nn.ModuleList()
        for level, m in list(enumerate(mult))[::-1]:
            for i in range(res_blocks + 1):
                layers = [ResBlock(ch + chans.pop(), m * mc, emb)]
                ch = m * mc
                if ds in attn_ds:
                    layers.append(Attention(ch))
                if level and i == res_blocks:
                    layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, ch, 3, padding=1)]
                    ds //= 2
                self.up.append(Step(*layers))
        self.out = nn.Sequential(norm(ch), nn.SiLU(), nn.Conv2d(ch, 1, 3, padding=1))

    def forward(self, x, t, code):
        e = self.time(timestep_embedding(t, self.mc)) + self.cond(code)
        hs = []
        for block in self.down:
            x = block(x, e)
            hs.append(x)
        x = self.middle(x, e)
        for block in self.up:
            x = block(torch.cat([x, hs.pop()], dim=1), e)
        return self.out(x)


class ReferenceRecipe:
    """Linear betas 1e-3..0.02, epsilon loss, AdamW 1e-4; ancestral sampler with 0.8 noise
    factor and clamping; data min-max scaled to [-1, 1] (of the log-density)."""

    def __init__(self, T: int = 1000, mc: int = 32, seed: int = 0):
        torch.manual_seed(seed)
        self.T = T
        self.net = ReferenceUNet(mc=mc)
        self.betas = torch.linspace(1e-3, 0.02, T, dtype=torch.float64)
        self.alpha_bar = torch.cumprod(1 - self.betas, 0)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=1e-4)

    def scale(self, fields: np.ndarray) -> np.ndarray:
        logs = np.log(fields)
        self.low, self.high = float(logs.min()), float(logs.max())
        return 2 * (logs - self.low) / (self.high - self.low) - 1

    def unscale(self, x: np.ndarray) -> np.ndarray:
        return np.exp((x + 1) / 2 * (self.high - self.low) + self.low)

    def train(self, x: np.ndarray, codes: np.ndarray, budget_s: float, batch: int, rng) -> int:
        """Steps until ``budget_s`` seconds of this process's CPU time (one torch thread)."""
        x, codes = torch.as_tensor(x, dtype=torch.float32)[:, None], torch.as_tensor(codes, dtype=torch.float32)
        start, steps = time.process_time(), 0
        while time.process_time() - start < budget_s:
            idx = torch.as_tensor(rng.integers(0, len(x), batch))
            t = torch.as_tensor(rng.integers(0, self.T, batch))
            noise = torch.randn_like(x[idx])
            ab = self.alpha_bar[t].float()[:, None, None, None]
            xt = ab.sqrt() * x[idx] + (1 - ab).sqrt() * noise
            loss = F.mse_loss(self.net(xt, t, codes[idx]), noise)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            steps += 1
        return steps

    @torch.no_grad()
    def sample(self, codes: np.ndarray, shape, seed: int, steps: int | None = None) -> np.ndarray:
        """The reference's ancestral loop; ``steps`` < T runs only the last ``steps`` (timing)."""
        g = torch.Generator().manual_seed(seed)
        c = torch.as_tensor(codes, dtype=torch.float32)
        x = torch.randn((len(c), 1, *shape), generator=g)
        for t in reversed(range(self.T if steps is None else steps)):
            tt = torch.full((len(c),), t, dtype=torch.long)
            eps = self.net(x, tt, c)
            beta, ab = float(self.betas[t]), float(self.alpha_bar[t])
            mean = (x - beta / math.sqrt(1 - ab) * eps) / math.sqrt(1 - beta)
            x = mean + (0.8 * math.sqrt(beta) * torch.randn(x.shape, generator=g) if t > 0 else 0)
            x = x.clamp(-1, 1)
        return x[:, 0].numpy()


# ------------------------------------------------------------------ the benchmark

def make_sweep(runs: int, realizations: int, size: int, seed: int):
    rng = np.random.default_rng(seed)
    points = synthetic.default_points("lognormal-field", runs, rng)
    fields = np.stack([synthetic.generate("lognormal-field", p, size=size, rng=rng)[0]
                       for p in points for _ in range(realizations)])
    return points, fields, [p for p in points for _ in range(realizations)]


def truth(point, n, size, seed):
    rng = np.random.default_rng(seed)
    return np.stack([synthetic.generate("lognormal-field", point, size=size, rng=rng)[0] for _ in range(n)])


def scores(gen, ref):
    ds = point_metrics(gen, ref, box_size=synthetic.BOX_SIZE_MPC, field_units="1", length_units="Mparsec")
    return {"spectrum_error": float(ds["spectrum_error"]), "spectrum_error_floor": float(ds["spectrum_error_floor"]),
            "wasserstein_1": float(ds["wasserstein_1"]), "wasserstein_1_floor": float(ds["wasserstein_1_floor"]),
            "variance_ratio": float(ds["variance_ratio"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget-s", type=float, default=None, help="training seconds per model")
    ap.add_argument("--members", type=int, default=None,
                    help="generated fields per point (default 16; the reference's 1000-step "
                         "sampler costs 1000 network calls per batch)")
    add_output_options(ap, "vs_reference")
    args = ap.parse_args()
    smoke = args.smoke
    size, runs, reals = (16, 8, 2) if smoke else (32, 64, 4)
    budget = args.budget_s or (4.0 if smoke else 900.0)
    members, n_true = (4, 4) if smoke else (args.members or 16, 256)
    T = 20 if smoke else 1000
    info = machine()
    torch.set_num_threads(1)
    points, fields, field_points = make_sweep(runs, reals, size, seed=0)
    held_out = {"index": -1.7, "amplitude": 1.1}
    train_point = points[0]

    # this package's default, trained for the budget (steps from a short calibration)
    def fit_cpu_s(n: int) -> float:
        c0 = time.process_time()
        RhoModel.create((size, size), SPACE, encoder="features").fit(
            fields, field_points, transform="log-standardize", steps=n, progress=False)
        return time.process_time() - c0

    # per-step cost without the set-up of a fit (which a first calibration once counted, so
    # that the committed full run trained for 422 of the 900 s asked; both models got 422 s)
    per_step = max(1e-3, (fit_cpu_s(13) - fit_cpu_s(3)) / 10)
    model = RhoModel.create((size, size), SPACE, encoder="features")
    steps = max(2, int(budget / per_step))
    t0, c0 = time.perf_counter(), time.process_time()
    model.fit(fields, field_points, transform="log-standardize", steps=steps, progress=False)
    ours_train_s, ours_train_wall = time.process_time() - c0, time.perf_counter() - t0
    rows, results = [], {}
    t0, c0 = time.perf_counter(), time.process_time()
    ours = {name: model.sample(p, members, seed=1)[0, :, 0] for name, p in (("train", train_point), ("held_out", held_out))}
    ours_rate, ours_rate_wall = 2 * members / (time.process_time() - c0), 2 * members / (time.perf_counter() - t0)

    # the reference recipe, trained for the same seconds
    ref = ReferenceRecipe(T=T, mc=8 if smoke else 32)
    n_params = sum(p.numel() for p in ref.net.parameters())
    scaled = ref.scale(fields)
    codes = np.stack([sha512_code(p) for p in field_points])
    t0 = time.perf_counter()
    ref_steps = ref.train(scaled, codes, ours_train_s, batch=32, rng=np.random.default_rng(0))
    ref_train_wall = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    theirs = {name: ref.unscale(ref.sample(np.stack([sha512_code(p)] * members), (size, size), seed=1))
              for name, p in (("train", train_point), ("held_out", held_out))}
    theirs_rate, theirs_rate_wall = 2 * members / (time.process_time() - c0), 2 * members / (time.perf_counter() - t0)

    for name, p in (("train", train_point), ("held_out", held_out)):
        true = truth(p, n_true, size, seed=99)
        for label, gen in (("rho_workflow", ours[name]), ("reference", theirs[name])):
            s = scores(gen, true)
            rows.append({"model": label, "point": name, **s})
            results.setdefault(label, {})[name] = s
    sweep_fields = 64 * 16
    results["rho_workflow"].update(train_steps=steps, train_s=ours_train_s, train_wall_s=ours_train_wall,
                                   samples_per_s=ours_rate, samples_per_wall_s=ours_rate_wall,
                                   sweep_64x16_s=sweep_fields / ours_rate)
    results["reference"].update(train_steps=ref_steps, train_s=ours_train_s, train_wall_s=ref_train_wall,
                                samples_per_s=theirs_rate, samples_per_wall_s=theirs_rate_wall,
                                sweep_64x16_s=sweep_fields / theirs_rate, parameters=n_params,
                                sweep_note=f"scaled from {2 * members} samples of {T} steps")
    ratio = lambda p: results["rho_workflow"][p]["spectrum_error"] / results["reference"][p]["spectrum_error"]
    payload = {"benchmark": "vs_reference", "machine": info, "smoke": smoke,
               "setup": {"size": size, "runs": runs, "realizations": reals, "budget_s": ours_train_s,
                         "members": members, "true_fields": n_true, "reference_T": T},
               "results": results, "rows": rows,
               "ratios": {"spectrum_error_ours_over_reference": {p: ratio(p) for p in ("train", "held_out")},
                          "sweep_speedup": results["reference"]["sweep_64x16_s"] / results["rho_workflow"]["sweep_64x16_s"]},
               "goals": {"spectrum_error_ratio_max": 0.5, "sweep_speedup_min": 20.0}}
    payload["goals_met"] = {
        "spectrum_error": all(v <= 0.5 for v in payload["ratios"]["spectrum_error_ours_over_reference"].values()),
        "sweep_speedup": payload["ratios"]["sweep_speedup"] >= 20.0}
    payload["clock"] = ("budgets, train_s and samples_per_s are CPU seconds of this process on one torch "
                        "thread (time.process_time): equal to wall seconds on an idle core, and not "
                        "biased by other load on a shared machine; *_wall_s are the wall seconds")
    print(table(rows, ["model", "point", "spectrum_error", "spectrum_error_floor", "wasserstein_1",
                       "wasserstein_1_floor", "variance_ratio"]))
    print(f"reference: {n_params / 1e6:.2f}M parameters, {ref_steps} steps; ours {steps} steps in "
          f"{ours_train_s:.0f} s; sweep speed-up {payload['ratios']['sweep_speedup']:.1f}x")
    write_result(result_path("vs_reference", args), payload)


if __name__ == "__main__":
    main()
