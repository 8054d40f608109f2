"""YAML with a key given twice is refused (both lines named); output names stay inside the
output folder and clear of the run's other artefacts."""

from __future__ import annotations

import pytest
import yaml

from rho_workflow.config import RUN_ARTEFACTS, load_pipeline
from rho_workflow.errors import ConfigError
from rho_workflow.workflow.cluster import parse_cluster_override
from rho_workflow.yamlio import load_yaml


def test_a_repeated_key_is_refused_with_both_lines(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("name: x\nsampling:\n  members: 2\n  steps: 3\n  members: 8\n")
    with pytest.raises(ConfigError, match=r"line 5: key 'members' is given twice .*first on line 3"):
        load_pipeline(path)
    path.write_text("sampling: {members: 2}\noutput: {dir: o}\nsampling: {members: 8}\n")
    with pytest.raises(ConfigError, match=r"line 3: key 'sampling' .*first on line 1") as info:
        load_pipeline(path)
    assert str(path) in str(info.value)


def test_a_repeated_key_in_a_cluster_file_or_inline_override(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("kind: local\nn_workers: 2\nn_workers: 4\n")
    with pytest.raises(ConfigError, match=r"(?s)--cluster file .*line 3: key 'n_workers'"):
        parse_cluster_override(str(path))
    with pytest.raises(ConfigError, match=r"key 'kind' is given twice"):
        parse_cluster_override("{kind: local, kind: slurm}")


def test_merge_keys_and_plain_documents_still_load():
    text = "base: &b {a: 1, b: 2}\nderived:\n  <<: *b\n  b: 3\n"
    assert load_yaml(text, "x") == yaml.safe_load(text) == {"base": {"a": 1, "b": 2},
                                                           "derived": {"a": 1, "b": 3}}


@pytest.mark.parametrize("name", ["model.ckpt", "../../x.nc", "sub/samples.nc", "/tmp/x.nc",
                                  "run.json", "store", "store.zarr", "parts", ".hidden.nc",
                                  "evaluation", "rho-workflow.lock", ".."])
def test_output_filename_must_be_a_free_plain_name(tmp_path, name):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"data": {"files": "x/*.nc", "variables": ["v"],
                                             "spatial_dims": ["x"], "units": {"v": "1"}},
                                    "sampling": {"grid": {"a": [1.0]}},
                                    "output": {"dir": str(tmp_path / "out"), "filename": name}}))
    with pytest.raises(ConfigError, match=r"output\.filename: ") as info:
        load_pipeline(path)
    assert len(info.value.problems) == 1
    assert set(RUN_ARTEFACTS) >= {"model.ckpt", "store", "run.json", "parts", "evaluation"}
