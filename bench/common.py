"""Shared helpers of the benchmarks: machine description, smoke/output options, JSON results,
printed tables.

Every benchmark takes ``--smoke`` (tiny sizes, seconds on one CPU thread: the real code path,
meaningless figures) and ``--out PATH``. A full run writes ``bench/results/NAME.json``, the
committed figures; a smoke run writes ``bench/work/smoke/NAME.json`` (git-ignored) unless
``--out`` says otherwise, so that it never overwrites the committed results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Sequence

RESULTS = Path(__file__).resolve().parent / "results"
SMOKE_RESULTS = Path(__file__).resolve().parent / "work" / "smoke"


def machine() -> dict[str, Any]:
    """Cores, memory, CPU model and vector extensions, GPU (if any), library versions, and the
    load at start. Machines of one kind differ: "AMD EPYC" has been seen with AVX-512 (bf16
    autocast 1.25x faster than fp32) and with AVX2 only (bf16 10x slower), so compare CPU
    seconds only between runs whose ``cpu_flags`` agree."""
    import torch

    from rho_workflow.provenance import git_commit

    cpu, flags = platform.processor(), []
    try:
        fields = dict(line.split(":", 1) for line in
                      Path("/proc/cpuinfo").read_text().split("\n\n", 1)[0].splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}  # the first processor's entry
        cpu = fields.get("model name", cpu)
        flags = sorted(f for f in fields.get("flags", "").split()
                       if f.startswith(("avx", "amx")) or f in ("fma", "f16c"))
    except OSError:
        pass
    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gib = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    info = {
        "cpu": cpu, "cpu_flags": flags, "cores": os.cpu_count(), "memory_gib": mem_gib,
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(), "load_average_at_start": os.getloadavg(),
        "git_commit": git_commit(Path(__file__).parent),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return info


def add_output_options(parser: argparse.ArgumentParser, name: str) -> None:
    """Add ``--smoke`` and ``--out`` to a benchmark's ``parser`` (``name``: its result file)."""
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes, seconds on one CPU thread: checks that the benchmark runs "
                             "(its figures mean nothing); writes to bench/work/smoke/ unless --out")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"the JSON result (default: bench/results/{name}.json; with --smoke "
                             f"bench/work/smoke/{name}.json)")


def result_path(name: str, args: argparse.Namespace) -> Path:
    """Where a run writes its JSON: ``--out``, else the smoke folder or ``bench/results/``."""
    if args.out is not None:
        return Path(args.out)
    return (SMOKE_RESULTS if args.smoke else RESULTS) / f"{name}.json"


def write_result(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` as indented JSON (keys in the order given) to ``path`` atomically."""
    from rho_workflow.atomic import atomic_write_bytes

    text = json.dumps(payload, indent=2, sort_keys=False, default=float) + "\n"
    return atomic_write_bytes(path, text.encode("utf-8"))


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A plain-text table of ``rows`` (dicts) with the given column order."""
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return "-" if v is None else str(v)

    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(out)
