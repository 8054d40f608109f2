"""Pipeline schema: every section validated with key paths; the resolved config is JSON."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from rho_workflow.config import ConfigError, PipelineConfig, load_pipeline

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "pipelines" / "demo.yaml"


@pytest.fixture()
def demo() -> dict:
    return yaml.safe_load(DEMO.read_text())


def problems_of(d: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        PipelineConfig.from_dict(d)
    return info.value.problems


def test_demo_pipeline_loads_and_resolves(demo):
    cfg = load_pipeline(DEMO)
    resolved = cfg.to_dict()
    json.dumps(resolved)  # plain JSON
    assert resolved["training"]["steps"] == demo["training"]["steps"]
    assert resolved["training"]["weight_decay"] == 0.0  # defaults filled in
    assert resolved["cluster"]["kind"] == "local"
    assert cfg.output.samples_path.name == "samples.nc"
    # the resolved config validates again to the same thing
    again = PipelineConfig.from_dict(resolved)
    assert again.to_dict() == resolved
    assert again.fingerprint() == cfg.fingerprint()


@pytest.mark.parametrize("section, key, value, expected", [
    ("model", "encoder", "fourier", "model.encoder: must be one of"),
    ("model", "T", 1, "model.T: must be >= 2"),
    ("model", "colour", "red", "model: unknown keys ['colour']"),
    ("training", "steps", "many", "training.steps: must be an integer"),
    ("training", "lr", -1.0, "training.lr: must be > 0"),
    ("training", "workers", 0, "training.workers: must be >= 1"),
    ("training", "bogus", 1, "training: unknown keys ['bogus']"),
    ("sampling", "sampler", "euler", "sampling.sampler: must be one of"),
    ("sampling", "chunk_size", 20, "sampling.chunk_size: must be a multiple of sampling.batch_size"),
    ("sampling", "members", 0, "sampling.members: must be >= 1"),
    ("output", "complevel", 12, "output.complevel: must be <= 9"),
    ("output", "format", "hdf4", "output.format: must be one of"),
    ("evaluation", "bins", True, "evaluation.bins: must be an integer"),
    ("cluster", "n_workers", -2, "cluster.n_workers: must be >= 1"),
    ("cluster", "kind", "kubernetes", "cluster.kind: unknown cluster kind 'kubernetes'; valid kinds are"),
])
def test_errors_name_the_key_path(demo, section, key, value, expected):
    demo[section][key] = value
    found = problems_of(demo)
    assert any(expected in p for p in found), found


def test_all_problems_are_reported_together(demo):
    demo["model"]["T"] = 0
    demo["sampling"]["steps"] = 0
    demo["data"]["spatial_dims"] = ["x", "x"]
    demo["surprise"] = {}
    found = problems_of(demo)
    joined = "\n".join(found)
    for expected in ("model.T", "sampling.steps", "data.spatial_dims", "unknown sections ['surprise']"):
        assert expected in joined


def test_grid_and_table_are_exclusive_and_checked(demo):
    d = copy.deepcopy(demo)
    d["sampling"]["table"] = [{"index": -2.0, "amplitude": 1.0}]
    assert any("exactly one of 'grid'" in p for p in problems_of(d))
    d = copy.deepcopy(demo)
    d["sampling"]["grid"]["index"] = {"start": -3, "stop": -1}
    assert any("sampling.grid.index: a range needs exactly one of 'num'" in p for p in problems_of(d))


def test_cross_checks(demo):
    demo["training"]["workers"] = 3
    found = problems_of(demo)
    assert any("training.batch_size: must be divisible by training.workers" in p for p in found)
    assert any("training.workers: 3 data-parallel ranks need as many Dask workers" in p for p in found)


def test_cluster_override_replaces_section(demo):
    cfg = PipelineConfig.from_dict(demo, cluster={"kind": "slurm", "cores": 2, "memory": "2GiB"})
    assert cfg.cluster.name == "slurm"
    assert cfg.to_dict()["cluster"]["cores"] == 2


def test_invalid_yaml_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_pipeline(bad)


def test_gpu_tasks_need_workers_with_a_gpu_resource(demo):
    demo["training"]["gpu"] = True
    found = problems_of(demo)
    assert any("training.gpu: tasks will request resources={'GPU': 1}" in p for p in found)
    demo["cluster"]["resources"] = {"GPU": 1}
    assert PipelineConfig.from_dict(demo).training.gpu


def test_schema_command_prints_the_json_schema_of_the_pipeline_file(capsys):
    from rho_workflow.cli import main

    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    sections = schema["properties"]
    for name in ("data", "model", "training", "sampling", "evaluation", "output", "cluster"):
        assert name in sections
    assert "source" not in sections
    assert set(schema["required"]) >= {"data", "sampling", "output"}
    defs = schema["$defs"]
    assert defs["ModelSection"]["properties"]["encoder"]["enum"] == ["features", "hash"]
    assert defs["ModelSection"]["additionalProperties"] is False
    assert defs["SLURMKind"]["properties"]["kind"] == {"const": "slurm"}
    assert "steps" in defs["TrainingSection"]["properties"]
