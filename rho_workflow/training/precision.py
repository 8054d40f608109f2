"""Mixed precision of a training run: when bf16 autocast is on, and when it is a bad idea.

``training.mixed_precision: auto`` is bf16 autocast on CUDA and float32 elsewhere. Asked for
explicitly on a CPU, bf16 pays off only where the CPU has native bf16 arithmetic (AVX-512
BF16 or AMX): measured on two machines sold as the same 2-core "AMD EPYC" kind, bf16 trained
the demo network 1.25x faster than float32 with AVX-512 BF16 and 10x slower with AVX2 only
(bench/train_throughput.py records the CPU's flags beside its figures).
"""

from __future__ import annotations

import logging

import torch

__all__ = ["bf16_autocast", "cpu_has_native_bf16"]

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
