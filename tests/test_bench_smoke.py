"""Every benchmark runs: each ``bench/*.py`` script's ``--smoke`` mode, in a subprocess.

A smoke run takes the benchmark's real code path at tiny sizes (a real local Dask cluster,
real training steps, real sampling), prints its table and writes its JSON to ``--out``. The
test checks the exit status, that the JSON parses with the benchmark's top-level keys, and
that the committed figures in ``bench/results/`` are left alone. One torch/OpenMP thread.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
HELPERS = {"common"}  # modules of bench/ that are not benchmarks

#: Top-level keys of each benchmark's JSON; a benchmark not listed needs at least "machine".
KEYS = {
    "preprocess": {"benchmark", "machine", "smoke", "sweep", "baseline", "preprocess",
                   "throughput_ratio_vs_baseline", "goal", "goal_met", "stats_agree"},
    "sampler_nfe": {"benchmark", "machine", "smoke", "args", "training", "noise_floor", "rows",
                    "goals", "seed_spread_25_nfe", "exact_denoiser", "exact_denoiser_setup"},
    "sweep_scaling": {"machine", "smoke", "runs", "ratios", "goals", "sweep", "large_sweep",
                      "large_sweep_zarr", "serial_growth", "output_formats", "output_path",
                      "driver_costs", "model"},
    "train_throughput": {"benchmark", "machine", "smoke", "steps_timed", "rows", "reference"},
    "likelihood": {"machine"},
    "time_to_quality": {"benchmark", "machine", "smoke", "clock", "recipe", "arms", "summary",
                        "lognormal2d_data_reference", "runs"},
    "vs_reference": {"benchmark", "machine", "smoke", "setup", "results", "rows", "ratios", "goals",
                     "goals_met"},
}
NAMES = sorted(set(KEYS) | {p.stem for p in BENCH.glob("*.py")} - HELPERS)
TIMEOUT_S = 300


def _digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


@pytest.mark.parametrize("name", NAMES)
def test_benchmark_smoke_run(name: str, tmp_path: Path) -> None:
    script = BENCH / f"{name}.py"
    if not script.exists():
        pytest.skip(f"bench/{name}.py does not exist yet")
    if "--smoke" not in script.read_text() and "add_output_options" not in script.read_text():
        pytest.fail(f"bench/{name}.py has no --smoke mode; give it one (bench/common.add_output_options) "
                    "so that CI checks that it runs")
    committed = BENCH / "results" / f"{name}.json"
    before = _digest(committed)
    out = tmp_path / f"{name}.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, str(script), "--smoke", "--out", str(out)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    log = f"stdout (tail):\n{proc.stdout[-3000:]}\nstderr (tail):\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0, f"bench/{name}.py --smoke exited {proc.returncode}\n{log}"
    assert proc.stdout.strip(), f"bench/{name}.py --smoke printed no table\n{log}"
    assert out.exists(), f"bench/{name}.py --smoke wrote no JSON at --out {out}\n{log}"
    result = json.loads(out.read_text())
    missing = KEYS.get(name, {"machine"}) - set(result)
    assert not missing, f"bench/{name}.py --smoke JSON lacks the keys {sorted(missing)}"
    if "smoke" in result:
        assert result["smoke"] is True, f"bench/{name}.py --smoke JSON says smoke={result['smoke']!r}"
    assert _digest(committed) == before, f"bench/{name}.py --smoke changed bench/results/{name}.json"
