"""Data-parallel training on a local Dask cluster of 2 CPU workers (gloo).

Stated tolerance: the 2-rank loss trajectory equals the 1-process trajectory with the same
global batch to rtol 1e-3 per step (DDP averages the gradients of two half batches, which
differs from the one-process mean only by float reduction order). Condition dropout draws differ
per rank by design, so it is switched off (p_uncond = 0); the null embedding then gets no
gradient, which the trainer's DDP allows (find_unused_parameters).
"""

from __future__ import annotations

import numpy as np
import pytest

from rho_workflow.errors import RunInterrupted
from rho_workflow.params import Parameter, ParamSpace
from rho_workflow.training.checkpoint import load_checkpoint
from rho_workflow.workflow.cluster import LocalKind
from rho_workflow.workflow.ddp import RankFailure, train_data_parallel
from rho_workflow.workflow.tasks import train_model

RTOL = 1e-3


def spec_for(tmp_path, name, steps=12):
    rng = np.random.default_rng(0)
    amp = rng.uniform(0.5, 2.0, size=48)
    fields = (rng.normal(size=(48, 1, 8, 8)) * amp[:, None, None, None]).astype(np.float32)
    space = ParamSpace([Parameter("amplitude", "1", low=0.5, high=2.0)])
    return {
        "data": {"kind": "arrays", "fields": fields, "points": [{"amplitude": float(a)} for a in amp],
                 "param_space": space.to_dict(), "transform": {"kind": "identity"}, "mask": None,
                 "metadata": {}},
        "model": {"encoder": "features", "prediction": "v", "schedule": "cosine", "T": 1000,
                  "p_uncond": 0.0,
                  "network": {"kind": "unet", "dims": 2, "base_channels": 8, "channel_mults": [1, 2],
                              "num_res_blocks": 1, "attention_levels": []}},
        "train": {"steps": steps, "batch_size": 8, "lr": 1e-3, "warmup_steps": 2, "ema_decay": 0.9,
                  "log_every": 1, "checkpoint_every": 4, "seed": 3, "device": "cpu"},
        "metadata": {"test": name},
        "checkpoint": str(tmp_path / f"{name}.ckpt"),
        "threads": 1,
    }


@pytest.fixture(scope="module")
def client():
    with LocalKind(n_workers=2, threads_per_worker=1, dashboard=False).connect() as c:
        yield c


def test_two_ranks_match_one_process(tmp_path, client):
    single = train_model(spec_for(tmp_path, "single"))
    ddp = train_data_parallel(client, spec_for(tmp_path, "ddp"), 2, timeout_s=60)
    assert ddp["ranks"] == 2 and ddp["attempts"] == 1 and len(set(ddp["workers"])) == 2
    assert len(ddp["losses"]) == len(single["losses"]) == 12
    np.testing.assert_allclose(ddp["losses"], single["losses"], rtol=RTOL)
    ckpt = load_checkpoint(tmp_path / "ddp.ckpt")
    assert ckpt["trainer_state"]["step"] == 12
    assert ckpt["config"]["metadata"]["test"] == "ddp"


def test_failed_rank_resubmits_group_from_checkpoint(tmp_path, client):
    single = train_model(spec_for(tmp_path, "single"))
    out = train_data_parallel(client, spec_for(tmp_path, "faulty"), 2, timeout_s=30,
                              fail_at={"rank": 0, "step": 6})
    assert out["attempts"] == 2
    # the second attempt resumed from the step-4 checkpoint and ran steps 5..12
    assert out["step"] == 12 and len(out["losses"]) == 8
    np.testing.assert_allclose(out["losses"], single["losses"][4:], rtol=RTOL)


def test_a_stop_request_stops_every_rank_at_one_step_and_resumes(tmp_path, client):
    """SIGTERM at a batch job's walltime: the driver writes the stop file, every rank stops
    after the same step, rank 0 checkpoints it, and nothing is resubmitted."""
    single = train_model(spec_for(tmp_path, "single"))
    stop = tmp_path / "stop"
    stop.write_text("SIGTERM")
    spec = {**spec_for(tmp_path, "stopped"), "stop_file": str(stop)}
    with pytest.raises(RunInterrupted, match="stopped on request at step 1; .* --resume"):
        train_data_parallel(client, spec, 2, timeout_s=60)
    assert load_checkpoint(tmp_path / "stopped.ckpt")["trainer_state"]["step"] == 1
    stop.unlink()
    out = train_data_parallel(client, {**spec, "resume": True}, 2, timeout_s=60)
    assert out["attempts"] == 1 and out["step"] == 12 and len(out["losses"]) == 11
    np.testing.assert_allclose(out["losses"], single["losses"][1:], rtol=RTOL)


def test_every_attempt_failing_raises(tmp_path, client):
    with pytest.raises(RankFailure, match="needs 3 distinct workers"):
        train_data_parallel(client, spec_for(tmp_path, "x"), 3)
