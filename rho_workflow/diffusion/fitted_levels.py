"""Noise levels fitted on the exact Gaussian denoiser: the ``fitted`` spacing of ``sampling_sigmas``.

A deterministic sampler run with the exact denoiser of Gaussian data ``N(0, diag(lam))``,
``D(x, sigma) = lam / (lam + sigma^2) x``, maps every mode linearly, ``x0 = g(lam) x``: one run
on a vector of ones reads off the gain of every mode at once. The exact probability-flow
solution from ``sigma_0`` to 0 has the gain ``sqrt(lam / (lam + sigma_0^2))`` (Song et al. 2021,
the ODE of tests/gaussian.py ``ode_map``), so ``g / g_exact - 1`` is the sampler's own error in
the amplitude of that mode, and twice it the error in its variance (its power spectrum).

For one sampler and a number of steps, :func:`fit_levels` chooses the levels
``sigma_1 > ... > sigma_(n-1)`` (``sigma_0`` is fixed at :attr:`FitSetup.sigma_max`, the top
level of the ``karras`` and ``log-snr`` spacings, so the prior is unchanged) that minimise the
RMS of that relative error over mode variances log-uniform in ``[lam_min, lam_max]`` (the
network's normalized units, where the data have unit variance), with the last level no lower
than ``sigma_floor``. Fitting a step schedule to a closed-form problem is the idea of Sabour et
al. 2024 ("Align Your Steps"), who fit to a bound on the KL divergence instead; here the target
is the exact ODE solution itself.

The fitted levels are stored as data in ``fitted_levels.json`` beside this module, with the set-up
that produced them; ``python -m rho_workflow.diffusion.fitted_levels`` refits them and rewrites
the file. They are exact for Gaussian data whose mode variances lie in the fitted range; data
with finer structure (mode variances below ``lam_min``) lose those modes at the floor, and on
non-Gaussian data the gain over ``log-snr`` is smaller (tests/test_fitted_levels.py measures it
on a Gaussian mixture).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from rho_workflow.provenance import git_commit

__all__ = ["FitSetup", "gain_error", "fit_levels", "fitted_sigmas", "fitted_table", "DATA_PATH"]

DATA_PATH = Path(__file__).with_name("fitted_levels.json")


@dataclass(frozen=True)
class FitSetup:
    """The Gaussian problem the levels are fitted on: ``n_lam`` mode variances log-uniform in
    ``[lam_min, lam_max]``, levels from ``sigma_max`` down to no lower than ``sigma_floor``.

    The defaults cover the normalized mode variances of the benchmark's lognormal sweep over its
    whole declared parameter range (0.010 to 470, bench/sampler_nfe.py), and the floor 0.0101
    lies just above the smallest level of the linear schedule at T = 1000 (0.0100005; cosine:
    0.0064), so that both schedules cover the fitted levels.
    """

    lam_min: float = 1e-2
    lam_max: float = 1e3
    n_lam: int = 60
    sigma_max: float = 80.0
    sigma_floor: float = 0.0101

    def lam(self) -> torch.Tensor:
        """The mode variances of the objective, float64 ``(n_lam,)``."""
        return torch.logspace(math.log10(self.lam_min), math.log10(self.lam_max), self.n_lam, dtype=torch.float64)


def gain_error(sampler: str, sigmas: torch.Tensor | Sequence[float], lam: torch.Tensor,
               **options: Any) -> torch.Tensor:
    """Relative error ``g(lam) / g_exact(lam) - 1`` of a deterministic sampler on the exact
    denoiser of ``N(0, diag(lam))``, one value per mode (see the module docstring)."""
    from rho_workflow.diffusion.samplers import get_sampler

    lam = torch.as_tensor(lam, dtype=torch.float64).reshape(1, -1)
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64)

    def exact_denoiser(x: torch.Tensor, sigma: torch.Tensor, cond=None) -> torch.Tensor:
        return x * lam / (lam + sigma.to(torch.float64)[:, None] ** 2)

    gain = get_sampler(sampler)(exact_denoiser, torch.ones_like(lam), sigmas, **options)[0]
    return gain / torch.sqrt(lam[0] / (lam[0] + float(sigmas[0]) ** 2)) - 1.0


def rms_gain_error(sampler: str, sigmas: torch.Tensor | Sequence[float], setup: FitSetup = FitSetup()) -> float:
    """The objective of :func:`fit_levels`: RMS of :func:`gain_error` over ``setup.lam()``."""
    return float(torch.sqrt((gain_error(sampler, sigmas, setup.lam()) ** 2).mean()))


def _levels(theta: np.ndarray, setup: FitSetup) -> torch.Tensor:
    """Levels from unconstrained ``theta``: decrements ``exp(theta)`` of ``log sigma`` from
    ``sigma_max``, scaled down together where they would pass ``sigma_floor``; then 0."""
    steps = np.exp(np.clip(theta, -30.0, 5.0))
    room = math.log(setup.sigma_max / setup.sigma_floor)
    steps = steps * min(1.0, room / steps.sum())
    log_sigma = math.log(setup.sigma_max) - np.concatenate([[0.0], np.cumsum(steps)])
    levels = torch.from_numpy(np.exp(log_sigma)).clamp(min=setup.sigma_floor)  # not below it by rounding
    levels[0] = setup.sigma_max
    return torch.cat([levels, torch.zeros(1, dtype=torch.float64)])


def fit_levels(sampler: str, steps: int, setup: FitSetup = FitSetup(),
               starts: Sequence[float] = (0.01, 0.05), fewer: torch.Tensor | None = None) -> torch.Tensor:
    """Levels ``(steps + 1,)`` (ending in 0) that minimise :func:`rms_gain_error` for ``sampler``.

    The starts are the ``log-snr`` spacings from ``sigma_max`` down to each of ``starts`` and,
    given ``fewer`` (fitted levels of ``steps - 1`` steps), those levels with their widest gap
    in ``log sigma`` split in two. L-BFGS-B (finite-difference gradients), a Nelder-Mead polish
    and L-BFGS-B again run from each, and the best result is kept. Seconds to a minute on one
    core.
    """
    from scipy.optimize import minimize

    if int(steps) != steps or steps < 2:
        raise ValueError(f"fit_levels: steps must be an integer >= 2 (one level besides sigma_max), got {steps}")

    def objective(theta: np.ndarray) -> float:
        value = rms_gain_error(sampler, _levels(theta, setup), setup)
        return value if math.isfinite(value) else 1e3

    thetas = [np.full(steps - 1, math.log(math.log(setup.sigma_max / max(end, setup.sigma_floor)) / (steps - 1)))
              for end in starts]
    if fewer is not None:
        gaps = list(-np.diff(np.log(np.asarray(fewer[:-1], dtype=np.float64))))
        if len(gaps) != steps - 2:
            raise ValueError(f"fit_levels: fewer must hold the {steps - 1}-step levels ({steps} values), "
                             f"got {len(gaps) + 2}")
        wide = int(np.argmax(gaps))
        gaps[wide:wide + 1] = [gaps[wide] / 2, gaps[wide] / 2]
        thetas.append(np.log(np.maximum(gaps, 1e-12)))
    best = None
    for theta in thetas:
        res = minimize(objective, theta, method="L-BFGS-B")
        res = minimize(objective, res.x, method="Nelder-Mead",
                       options={"maxiter": 200 * steps, "xatol": 1e-6, "fatol": 1e-12, "adaptive": True})
        res = minimize(objective, res.x, method="L-BFGS-B")
        if best is None or res.fun < best.fun:
            best = res
    return _levels(best.x, setup)


@lru_cache(maxsize=1)
def _data() -> dict[str, Any]:
    return json.loads(DATA_PATH.read_text())


def fitted_table() -> dict[str, dict[int, list[float]]]:
    """The stored levels, ``{sampler: {steps: [sigma_0, ..., 0]}}``."""
    return {name: {int(k): v["sigmas"] for k, v in by_steps.items()} for name, by_steps in _data()["levels"].items()}


def fitted_sigmas(sampler: str | None, steps: int) -> torch.Tensor:
    """The stored fitted levels of ``sampler`` with ``steps`` steps, float64 ``(steps + 1,)``."""
    table = fitted_table()
    if sampler not in table:
        raise ValueError(f"spacing 'fitted': no fitted levels for sampler {sampler!r}; they exist for "
                         f"{sorted(table)} (pass sampler= to sampling_sigmas), or use spacing 'log-snr'")
    if int(steps) not in table[sampler]:
        raise ValueError(f"spacing 'fitted': {sampler} has fitted levels for steps {sorted(table[sampler])}, "
                         f"not {steps}; use one of them or spacing 'log-snr'")
    return torch.tensor(table[sampler][int(steps)], dtype=torch.float64)


def main(argv: Sequence[str] | None = None) -> None:
    """Refit the levels and write them (with the set-up and the log-snr baseline) as JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samplers", nargs="+", default=["dpmpp_2m", "dpmpp_3m", "unipc", "unipc_bh1"])
    ap.add_argument("--steps", type=int, nargs="+", default=list(range(5, 17)))
    ap.add_argument("--out", type=Path, default=DATA_PATH)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    setup = FitSetup()
    levels: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    for name in args.samplers:
        levels[name], previous = {}, None
        for steps in sorted(args.steps):
            t1 = time.perf_counter()
            sigmas = fit_levels(name, steps, setup, fewer=previous if previous is not None
                                and len(previous) == steps else None)
            previous = sigmas
            log_snr = torch.exp(torch.linspace(math.log(setup.sigma_max), math.log(setup.sigma_floor), steps,
                                               dtype=torch.float64))
            baseline = rms_gain_error(name, torch.cat([log_snr, torch.zeros(1, dtype=torch.float64)]), setup)
            levels[name][str(steps)] = {"sigmas": [float(s) for s in sigmas],
                                        "rms_gain_error": rms_gain_error(name, sigmas, setup),
                                        "log_snr_rms_gain_error": baseline,
                                        "fit_seconds": round(time.perf_counter() - t1, 1)}
            print(f"{name} {steps} steps: rms gain error {levels[name][str(steps)]['rms_gain_error']:.2e} "
                  f"(log-snr to the same floor {baseline:.2e}), {time.perf_counter() - t1:.0f} s", flush=True)
    payload = {
        "description": "noise levels fitted on the exact Gaussian denoiser (rho_workflow.diffusion.fitted_levels)",
        "fitted_with": {"command": "python -m rho_workflow.diffusion.fitted_levels", "setup": asdict(setup),
                        "objective": "RMS over lam of g(lam)/g_exact(lam) - 1, the relative gain error of each "
                                     "mode of N(0, diag(lam)) against the exact probability-flow solution",
                        "optimizer": "scipy L-BFGS-B, Nelder-Mead, L-BFGS-B from log-snr starts and from "
                                     "the fit of one step fewer with its widest gap split",
                        "git_commit": git_commit(Path(__file__).parent), "date": time.strftime("%Y-%m-%d"),
                        "seconds": round(time.perf_counter() - t0)},
        "levels": levels,
    }
    args.out.write_text(json.dumps(payload, indent=1) + "\n")
    _data.cache_clear()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
