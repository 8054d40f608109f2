"""bf16 autocast on a CPU: on only when asked, and a warning where the CPU has no native bf16.

Emulated bf16 (AVX2 only) trains several times slower than float32, native bf16 (AVX-512
BF16, AMX) faster; the warning follows what torch detects on the machine the test runs on.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from rho_workflow.training.runtime import bf16_autocast, cpu_has_native_bf16


def test_auto_is_float32_on_cpu_and_bf16_only_when_asked(caplog):
    cpu = torch.device("cpu")
    with caplog.at_level(logging.WARNING, logger="rho_workflow"):
        assert bf16_autocast("auto", cpu) is False and bf16_autocast("no", cpu) is False
    assert not caplog.records  # nothing asked, nothing to warn about
    with caplog.at_level(logging.WARNING, logger="rho_workflow"):
        assert bf16_autocast("bf16", cpu) is True
    warned = [r for r in caplog.records if "mixed_precision: bf16" in r.getMessage()]
    assert len(warned) == (0 if cpu_has_native_bf16() else 1)
    if warned:
        assert "fix: set training.mixed_precision: auto" in warned[0].getMessage()


def test_native_bf16_agrees_with_the_cpu_flags():
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo on this system")
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.read_text().splitlines()
                  if line.startswith("flags")), [])
    assert cpu_has_native_bf16() == ("avx512_bf16" in flags or "amx_tile" in flags)
