"""How a training run uses its machine: bf16 autocast, torch.compile, agreement of ranks.

``training.mixed_precision: auto`` is bf16 autocast on CUDA and float32 elsewhere. Asked for
explicitly on a CPU, bf16 pays off only where the CPU has native bf16 arithmetic (AVX-512
BF16 or AMX): measured on two machines sold as the same 2-core "AMD EPYC" kind, bf16 trained
the demo network 1.25x faster than float32 with AVX-512 BF16 and 10x slower with AVX2 only
(bench/train_throughput.py records the CPU's flags beside its figures).

``training.compile: true`` compiles inside the first step; a network torch.compile cannot
build fails there with one message (:func:`compile_failure`). Data-parallel ranks decide
together whether to stop (:func:`all_agree`): each may see the stop file at another step.
"""

from __future__ import annotations

import logging

import torch
import torch.distributed as dist

from rho_workflow.errors import RhoWorkflowError

__all__ = ["all_agree", "bf16_autocast", "compile_failure", "cpu_has_native_bf16"]

logger = logging.getLogger("rho_workflow")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bf16 natively (AVX-512 BF16 or AMX tiles)."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def bf16_autocast(mixed_precision: str, device: torch.device) -> bool:
    """Whether training on ``device`` runs under bf16 autocast (``training.mixed_precision``:
    ``bf16``, ``no`` or ``auto``); warns once per run when bf16 is asked for on a CPU
    without native bf16 arithmetic."""
    use = mixed_precision == "bf16" or (mixed_precision == "auto" and device.type == "cuda")
    if use and device.type == "cpu" and not cpu_has_native_bf16():
        logger.warning("training.mixed_precision: bf16 on a CPU without native bf16 arithmetic "
                       "(no AVX-512 BF16 or AMX): emulated bf16 trains several times slower "
                       "than float32 here; fix: set training.mixed_precision: auto (float32 on CPU)")
    return use


def compile_failure(err: BaseException) -> RhoWorkflowError | None:
    """The one message for ``training.compile: true`` when TorchDynamo or inductor cannot compile
    this network (torch 2.13's inductor fails on the default 3D network on CPU), else None."""
    module = type(err).__module__ or ""
    if not module.startswith(("torch._dynamo", "torch._inductor")):
        return None
    inner = getattr(err, "inner_exception", None) or err.__cause__ or err  # the backend's own error
    first = next((line for line in str(inner).splitlines() if line.strip()), type(inner).__name__)
    return RhoWorkflowError(
        what=f"torch.compile could not compile the network ({type(err).__name__}: {first[:200]})",
        where="training.compile", rule="compile: true needs a network every layer of which the "
        "inductor backend of this torch can lower",
        fix="set training.compile: false (eager mode trains the same model; on CPU within 7% of "
            "compiled speed, bench/train_throughput.py)")


def all_agree(flag: bool, world: int, device: torch.device) -> bool:
    """``flag`` of any rank, on every rank (ranks see a stop file at different steps)."""
    if world == 1:
        return bool(flag)
    agreed = torch.tensor([float(flag)], device=device)
    dist.all_reduce(agreed, op=dist.ReduceOp.MAX)
    return bool(agreed.item())
