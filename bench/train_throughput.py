"""Training throughput (samples/s) of the default 2D (32^2) and 3D (32^3) U-Nets.

Also times one sampling network evaluation and a whole 25-step DPM-Solver++(2M) sample of
one field, the figure behind the "3D field in seconds on a CPU" goal. On a GPU the 2D model
is also run with bf16 autocast, channels_last and torch.compile, each as a ratio to fp32
eager in the same process.

    .venv/bin/python bench/train_throughput.py [--quick | --smoke] [--out PATH]

``--cpu-variants`` also times bf16 autocast and ``torch.compile`` on the CPU (one thread, CPU
seconds per step as a ratio to fp32 eager of the same network: the demo's 2D network and the
default 3D one). ``--quick`` times 3 steps of the full-size models; ``--smoke`` runs the same path on 16^2 and
16^3 models, 2 timed steps (seconds), and writes to ``bench/work/smoke/`` or ``--out``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_output_options, machine, result_path, table, write_result  # noqa: E402

from rho_workflow.api import RhoModel, default_network  # noqa: E402
from rho_workflow.params import Parameter, ParamSpace  # noqa: E402

SPACE = ParamSpace([Parameter("index", "1", low=-3, high=-1), Parameter("amplitude", "Mpc2", low=0.5, high=2)])


def time_training(model: RhoModel, batch: int, steps: int, device: str, **opts) -> float:
    """Samples/s over ``steps`` steps after 2 warm-up steps (all on ``device``)."""
    shape = (batch * 4, *model.field_shape)
    x = torch.randn(shape).numpy()
    pts = [{"index": -2.0, "amplitude": 1.0}] * shape[0]
    model.fit_normalized(x, pts, steps=2, batch_size=batch, progress=False, device=device, **opts)
    model.config["training"] = None
    result = model.fit_normalized(x, pts, steps=steps, batch_size=batch, progress=False, device=device,
                                  warmup_steps=1, **opts)
    return result.samples_per_second


def cpu_seconds_per_step(model: RhoModel, batch: int, steps: int, **opts) -> float:
    """CPU seconds (``time.process_time``) per training step over ``steps`` steps, after 3
    warm-up steps in the same call's set-up (the compile of ``compile=True`` among them)."""
    shape = (batch * 4, *model.field_shape)
    x = torch.randn(shape).numpy()
    pts = [{"index": -2.0, "amplitude": 1.0}] * shape[0]
    marks: list[float] = []
    model.config["training"] = None
    model.fit_normalized(x, pts, steps=3 + steps, batch_size=batch, progress=False, device="cpu",
                         warmup_steps=1, log_every=1, on_log=lambda step, loss: marks.append(time.process_time()),
                         **opts)
    return (marks[-1] - marks[2]) / steps


CPU_VARIANTS = (("fp32 eager", {"mixed_precision": "no"}), ("bf16 autocast", {"mixed_precision": "bf16"}),
                ("fp32 + compile", {"mixed_precision": "no", "compile": True}),
                ("bf16 + compile", {"mixed_precision": "bf16", "compile": True}))


def cpu_variants(configs: list[tuple[str, tuple, int, dict]], steps: int, compile_: bool = True) -> list[dict]:
    """bf16 autocast and torch.compile (inductor) on this CPU, each a ratio of CPU seconds
    per step to fp32 eager of the same network in the same process (one torch thread).
    ``compile_=False`` skips the compiled variants (their compile costs minutes of CPU)."""
    rows = []
    for name, shape, batch, network in configs:
        base = None
        for variant, opts in CPU_VARIANTS if compile_ else CPU_VARIANTS[:2]:
            model = RhoModel.create(shape, SPACE, network={**default_network(shape), **network}, device="cpu")
            try:
                per_step = cpu_seconds_per_step(model, batch, steps, **opts)
            except Exception as exc:  # noqa: BLE001 -- a compile that fails on this CPU is a result
                rows.append({"config": name, "device": "cpu", "variant": variant, "error": repr(exc)[:200]})
                continue
            base = base or per_step
            rows.append({"config": name, "device": "cpu", "variant": variant, "params_M": model.n_parameters / 1e6,
                         "batch": batch, "cpu_s_per_step": per_step, "ratio": base / per_step})
    return rows


def time_sampling(model: RhoModel, steps: int = 25) -> tuple[float, float]:
    """(seconds per network evaluation at batch 1, seconds per ``steps``-step sample)."""
    model.sample({"index": -2.0, "amplitude": 1.0}, n=1, steps=2, sampler="dpmpp_2m")
    t0 = time.perf_counter()
    model.sample({"index": -2.0, "amplitude": 1.0}, n=1, steps=steps, sampler="dpmpp_2m")
    per_sample = time.perf_counter() - t0
    return per_sample / steps, per_sample


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 timed steps of the full-size models")
    ap.add_argument("--cpu-variants", action="store_true",
                    help="also time bf16 autocast and torch.compile on the CPU (demo 2D network and default 3D)")
    add_output_options(ap, "train_throughput")
    args = ap.parse_args()
    steps = 3 if args.quick else 2 if args.smoke else 20
    rows = []
    cpu_configs = [("2D 32x32", (32, 32), 32), ("3D 32^3", (32, 32, 32), 4)]
    if args.smoke:
        cpu_configs = [("2D 16x16", (16, 16), 4), ("3D 16^3", (16, 16, 16), 2)]
    for name, shape, batch in cpu_configs:
        model = RhoModel.create(shape, SPACE, network=default_network(shape), device="cpu")
        sps = time_training(model, batch, steps, "cpu")
        nfe_s, sample_s = time_sampling(model)
        rows.append({"config": name, "device": "cpu", "variant": "fp32 eager", "params_M": model.n_parameters / 1e6,
                     "batch": batch, "train_samples_per_s": sps, "ratio": 1.0,
                     "nfe_seconds_b1": nfe_s, "sample_25nfe_seconds": sample_s})
    if args.cpu_variants or args.smoke:
        torch.set_num_threads(1)
        configs = [("2D 32x32 demo net", (32, 32), 32, {"base_channels": 16}), ("3D 32^3", (32, 32, 32), 4, {})]
        if args.smoke:
            configs = [("2D 16x16 demo net", (16, 16), 4, {"base_channels": 16})]
        rows += cpu_variants(configs, steps, compile_=not args.smoke)  # smoke: no compile (minutes)
    if torch.cuda.is_available():
        shape, batch = (32, 32), 128
        base = None
        for variant, opts in (("fp32 eager", {"mixed_precision": "no"}), ("bf16 autocast", {"mixed_precision": "bf16"}),
                              ("bf16 + compile", {"mixed_precision": "bf16", "compile": True})):
            model = RhoModel.create(shape, SPACE, network=default_network(shape), device="cuda")
            sps = time_training(model, batch, steps * 5, "cuda", **opts)
            base = base or sps
            rows.append({"config": "2D 32x32", "device": "cuda", "variant": variant,
                         "params_M": model.n_parameters / 1e6, "batch": batch,
                         "train_samples_per_s": sps, "ratio": sps / base})
    cols = ["config", "device", "variant", "params_M", "batch", "train_samples_per_s", "cpu_s_per_step", "ratio",
            "nfe_seconds_b1", "sample_25nfe_seconds", "error"]
    print(table(rows, cols))
    reference = {"rho_diffusion_UNetv2_2D_samples_per_s": 67, "rho_diffusion_3D_samples_per_s": 0.2,
                 "note": "figures of the reference implementation on this machine kind, from issue #2"}
    path = write_result(result_path("train_throughput", args),
                        {"benchmark": "train_throughput", "machine": machine(), "smoke": args.smoke,
                         "steps_timed": steps, "rows": rows, "reference": reference})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
