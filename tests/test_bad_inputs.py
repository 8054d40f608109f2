"""The reliability table of bad inputs: config, data, checkpoints, API requests, outputs.

Each case is what a hostile but fair new user might do. Through the command line every one
must end in exit status 2 with one message (``rho-workflow: error: ...``, no traceback) that
names the key or file and matches the case's pattern; through the Python API, in one
:class:`~rho_workflow.errors.RhoWorkflowError` with such a message. The cases are counted in
the README's reliability table (``tests/reliability_table.py``).
"""

from __future__ import annotations

import copy
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import netCDF4
import numpy as np
import pytest
import yaml

from rho_workflow.cli import main
from rho_workflow.errors import RhoWorkflowError

THREADS = {"kind": "local", "n_workers": 1, "processes": False, "dashboard": False}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A finished tiny run: simulations, store, checkpoint; the pipeline dict that made it."""
    from test_pipeline_e2e import small_pipeline

    from rho_workflow.pipeline import run_pipeline

    root = tmp_path_factory.mktemp("bad-inputs")
    spec = small_pipeline(root)
    spec["training"].update(steps=2, checkpoint_every=2)
    spec["sampling"].update(steps=2)
    spec["evaluation"]["enabled"] = False
    spec["cluster"] = dict(THREADS)
    run_pipeline(spec, stages=["simulate", "preprocess", "train"], progress=False)
    return root, spec


class Env:
    """One case's sandbox: a copy of the base run's files and its pipeline dict."""

    def __init__(self, base, tmp_path: Path):
        root, spec = base
        self.tmp = tmp_path
        self.sims = tmp_path / "sims"
        self.out = tmp_path / "out"
        shutil.copytree(root / "sims", self.sims)
        self.out.mkdir()
        for name in ("store", "model.ckpt"):
            src = root / "out" / name
            (shutil.copytree if src.is_dir() else shutil.copy2)(src, self.out / name)
        self.spec = copy.deepcopy(spec)
        self.spec["simulate"] = None
        self.spec["data"]["files"] = str(self.sims / "*.nc")
        self.spec["output"]["dir"] = str(self.out)
        self.path = tmp_path / "pipeline.yaml"

    def files(self) -> list[Path]:
        return sorted(self.sims.glob("*.nc"))

    def edit(self, path: Path, fn: Callable[[netCDF4.Dataset], None]) -> None:
        with netCDF4.Dataset(path, "a") as nc:
            fn(nc)

    def write(self, spec: dict | None = None) -> str:
        spec = self.spec if spec is None else spec
        self.path.write_text(yaml.safe_dump({k: v for k, v in spec.items() if v is not None},
                                            sort_keys=False))
        return str(self.path)

    def model(self):
        from rho_workflow.api import RhoModel

        return RhoModel.load(self.out / "model.ckpt", device="cpu")


@dataclass(frozen=True)
class Case:
    id: str
    category: str  # config | data | checkpoint | api | output
    run: Callable[[Env], list[str] | None]  # argv of the CLI, or None after an API call
    expect: str  # a regular expression the one message must match (names the key or file)


CASES: list[Case] = []


def case(category: str, expect: str):
    def register(fn):
        CASES.append(Case(fn.__name__, category, fn, expect))
        return fn
    return register


def sections(env: Env, **changes) -> dict:
    spec = copy.deepcopy(env.spec)
    for dotted, value in changes.items():
        *keys, last = dotted.split("__")
        node = spec
        for key in keys:
            node = node.setdefault(key, {})
        if value is _DELETE:
            node.pop(last, None)
        else:
            node[last] = value
    return spec


_DELETE = object()


def dry(env: Env, **changes) -> list[str]:
    return ["run", env.write(sections(env, **changes)), "--dry-run"]


# -- config: the pipeline file and --cluster ------------------------------------------------

@case("config", r"not valid YAML.*line")
def yaml_syntax_error(env):
    env.path.write_text("name: x\nsampling: {members: [1, 2}\n")
    return ["run", str(env.path), "--dry-run"]


@case("config", r"line \d+: key 'sampling' is given twice .*first on line \d+")
def duplicate_section(env):
    text = yaml.safe_dump(env.spec, sort_keys=False)
    env.path.write_text(text + "sampling: {members: 99}\n")
    return ["run", str(env.path), "--dry-run"]


@case("config", r"key 'members' is given twice")
def duplicate_nested_key(env):
    env.write()
    env.path.write_text(env.path.read_text().replace("sampling:\n", "sampling:\n  members: 3\n", 1))
    return ["run", str(env.path), "--dry-run"]


@case("config", r"pipeline file .*does not exist")
def pipeline_file_missing(env):
    return ["run", str(env.tmp / "nope.yaml"), "--dry-run"]


@case("config", r"the pipeline must be a mapping of sections")
def pipeline_is_a_list(env):
    env.path.write_text("- a\n- b\n")
    return ["run", str(env.path), "--dry-run"]


@case("config", r"unknown sections \['sampler'\]")
def unknown_section(env):
    return dry(env, sampler={"steps": 3})


@case("config", r"sampling: unknown keys \['stepz'\]")
def unknown_key(env):
    return dry(env, sampling__stepz=3)


@case("config", r"sampling\.steps: must be >= 1, got 0")
def steps_zero(env):
    return dry(env, sampling__steps=0)


@case("config", r"sampling\.steps: must be an integer, got 'ten'")
def steps_text(env):
    return dry(env, sampling__steps="ten")


@case("config", r"sampling\.sampler: must be one of")
def unknown_sampler(env):
    return dry(env, sampling__sampler="magic")


@case("config", r"sampling\.chunk_size: must be a multiple of sampling\.batch_size")
def chunk_not_multiple(env):
    return dry(env, sampling__chunk_size=3)


@case("config", r"sampling: give exactly one of 'grid'")
def grid_and_table(env):
    return dry(env, sampling__table=[{"index": -2.0, "amplitude": 1.0}])


@case("config", r"sampling\.members: must be >= 1, got -2")
def members_negative(env):
    return dry(env, sampling__members=-2)


@case("config", r"model\.encoder: must be one of \['features', 'hash'\]")
def unknown_encoder(env):
    return dry(env, model__encoder="sha")


@case("config", r"model\.T: must be >= 2, got 1")
def diffusion_steps_one(env):
    return dry(env, model__T=1)


@case("config", r"training\.batch_size: must be >= 1, got 0")
def training_batch_zero(env):
    return dry(env, training__batch_size=0)


@case("config", r"training\.lr: must be > 0")
def training_lr_negative(env):
    return dry(env, training__lr=-1e-3)


@case("config", r"training\.backend: 'nccl' needs GPU workers")
def nccl_without_gpu(env):
    return dry(env, training__backend="nccl")


@case("config", r"training\.batch_size: must be divisible by training\.workers")
def batch_not_divisible(env):
    return dry(env, training__workers=3, cluster={"kind": "local", "n_workers": 3})


@case("config", r"training\.gpu: tasks will request .*GPU")
def gpu_without_resource(env):
    return dry(env, training__gpu=True)


@case("config", r"training\.workers: 4 data-parallel ranks need as many Dask workers")
def more_ranks_than_workers(env):
    return dry(env, training__workers=4, training__batch_size=8)


@case("config", r"evaluation\.split: must be one of")
def unknown_split(env):
    return dry(env, evaluation__split="test")


@case("config", r"simulate\.kind: must be one of")
def unknown_simulation(env):
    return dry(env, simulate={"kind": "galaxy", "out_dir": str(env.sims)})


@case("config", r"data: is required")
def no_data_section(env):
    return dry(env, data=_DELETE)


@case("config", r"data\.transform\.log: .*not among the field variables")
def log_of_unknown_variable(env):
    return dry(env, data__transform__log=["pressure"])


@case("config", r"name: must be a non-empty string")
def empty_name(env):
    return dry(env, name="")


@case("config", r"cluster\.kind: unknown cluster kind 'kubernetes'")
def unknown_cluster_kind(env):
    return dry(env, cluster={"kind": "kubernetes"})


@case("config", r"cluster\.n_workers: must be >= 1, got 0")
def no_workers(env):
    return dry(env, cluster={"kind": "local", "n_workers": 0})


@case("config", r"--cluster: expected a kind name")
def cluster_override_not_a_mapping(env):
    return ["run", env.write(), "--dry-run", "--cluster", "[1, 2]"]


@case("config", r"--cluster file .*line 3: key 'n_workers' is given twice")
def cluster_file_duplicate_key(env):
    f = env.tmp / "cluster.yaml"
    f.write_text("kind: local\nn_workers: 2\nn_workers: 4\n")
    return ["run", env.write(), "--dry-run", "--cluster", str(f)]


@case("config", r"--cluster file .*not valid YAML")
def cluster_file_syntax_error(env):
    f = env.tmp / "cluster.yaml"
    f.write_text("kind: local\n  n_workers: [2\n")
    return ["run", env.write(), "--dry-run", "--cluster", str(f)]


@case("config", r"cluster\.threads_per_worker: must be >= 1")
def cluster_override_bad_value(env):
    return ["run", env.write(), "--dry-run", "--cluster", "{kind: local, threads_per_worker: 0}"]


@case("config", r"sampling\.grid: must give values for exactly .*missing \['amplitude'\]")
def grid_misses_a_parameter(env):
    return dry(env, sampling__grid={"index": [-2.0]})


@case("config", r"sampling\.grid\.amplitude: units 'K' cannot be converted")
def grid_units_wrong(env):
    return dry(env, sampling__grid={"index": [-2.0], "amplitude": {"values": [1.0], "units": "K"}})


@case("config", r"sampling\.grid: point 0: continuous parameter 'index': value 5")
def grid_outside_training_range(env):
    return dry(env, sampling__grid={"index": [5.0], "amplitude": [1.0]})


@case("config", r"sampling\.guidance: 2\.0 needs the unconditional model, which model\.p_uncond 0 never trains")
def guidance_without_condition_dropout(env):
    return dry(env, sampling__guidance=2.0, model__p_uncond=0.0)


@case("config", r"model\.network .*cannot be built for fields of shape \(1, 16, 16\): UNet boundary 'walls': "
                r"valid boundaries are")
def network_boundary_unknown(env):
    return dry(env, model__network__boundary="walls")


@case("config", r"model\.network .*\(1, 16, 16\).*boundary 'periodic': spatial shape \(16, 16\) is not a "
                r"multiple of 6.*fix")
def network_periodic_grid_not_a_multiple(env):
    """Caught before any stage runs, not when training starts."""
    return ["run", env.write(sections(env, model__network__boundary="periodic", model__network__patch_size=3)),
            "--overwrite"]


# -- data: the netCDF sweep -----------------------------------------------------------------

def preprocess(env: Env) -> list[str]:
    return ["preprocess", env.write()]


@case("data", r"nothing/\*\.nc.*a glob must match at least one file")
def glob_matches_nothing(env):
    env.spec["data"]["files"] = str(env.tmp / "nothing" / "*.nc")
    return preprocess(env)


@case("data", r"run0003\.nc.*readable netCDF")
def truncated_file(env):
    f = env.files()[3]
    f.write_bytes(f.read_bytes()[:200])
    return preprocess(env)


@case("data", r"run0002\.nc.*'density'")
def variable_missing(env):
    f = env.files()[2]
    env.edit(f, lambda nc: nc.renameVariable("density", "rho"))
    return preprocess(env)


@case("data", r"run0001\.nc.*'density'.*units")
def units_missing(env):
    env.edit(env.files()[1], lambda nc: nc.variables["density"].delncattr("units"))
    return preprocess(env)


@case("data", r"run0001\.nc.*'density'.*'K'")
def units_of_another_dimension(env):
    env.edit(env.files()[1], lambda nc: nc.variables["density"].setncattr("units", "K"))
    return preprocess(env)


@case("data", r"run0004\.nc.*parameter attribute 'amplitude'")
def parameter_missing(env):
    env.edit(env.files()[4], lambda nc: nc.variables["density"].delncattr("amplitude"))
    return preprocess(env)


@case("data", r"run0005\.nc.*'index'.*continuous \(inferred from the first file")
def parameter_text_in_one_file(env):
    env.edit(env.files()[5], lambda nc: nc.variables["density"].setncattr("index", "steep"))
    return preprocess(env)


@case("data", r"run0000\.nc.*'index'.*categorical \(inferred from the first file")
def parameter_text_in_the_first_file(env):
    env.edit(env.files()[0], lambda nc: nc.variables["density"].setncattr("index", "steep"))
    return preprocess(env)


@case("data", r"run0006\.nc.*must be finite")
def parameter_nan(env):
    env.edit(env.files()[6], lambda nc: nc.variables["density"].setncattr("index", np.nan))
    return preprocess(env)


@case("data", r"run0007\.nc.*'amplitude'.*convert to the canonical")
def parameter_units_wrong(env):
    env.edit(env.files()[7], lambda nc: nc.variables["density"].setncattr("amplitude_units", "s"))
    return preprocess(env)


@case("data", r"run0002\.nc.*NaN/inf point")
def field_nan(env):
    def poison(nc):
        nc.variables["density"][0, 3, 3] = np.nan
    env.edit(env.files()[2], poison)
    return preprocess(env)


@case("data", r"run0003\.nc.*below the floor.*transform\.clamp")
def field_nonpositive_under_log(env):
    def zero(nc):
        nc.variables["density"][1, 0, :4] = 0.0
    env.edit(env.files()[3], zero)
    return preprocess(env)


@case("data", r"run0011\.nc.*identical to those of .*run0010\.nc")
def duplicate_run(env):
    files = env.files()
    shutil.copy(files[10], files[11])
    return preprocess(env)


@case("data", r"run0004\.nc, variable 'x'.*all files must share one grid")
def grid_differs(env):
    def shift(nc):
        nc.variables["x"][:] = nc.variables["x"][:] + 1.0
    env.edit(env.files()[4], shift)
    return preprocess(env)


@case("data", r"run0000\.nc, variable 'density'.*spatial dims \['x', 'z'\].*missing \['z'\]")
def spatial_dim_missing(env):
    env.spec["data"]["spatial_dims"] = ["x", "z"]
    return preprocess(env)


@case("data", r"data\.params\.index\.source: must be one of")
def unknown_parameter_source(env):
    env.spec["data"]["params"]["index"]["source"] = "header"
    return preprocess(env)


@case("data", r"data\.units: is required")
def data_units_missing(env):
    env.spec["data"].pop("units")
    return preprocess(env)


# -- checkpoints ----------------------------------------------------------------------------

def sample(env: Env) -> list[str]:
    return ["sample", env.write(), "--overwrite"]


@case("checkpoint", r"no checkpoint at .*model\.ckpt: run the train stage first")
def checkpoint_missing(env):
    (env.out / "model.ckpt").unlink()
    return sample(env)


@case("checkpoint", r"checkpoint .*model\.ckpt: cannot be read safely")
def checkpoint_truncated(env):
    ckpt = env.out / "model.ckpt"
    ckpt.write_bytes(ckpt.read_bytes()[:5000])
    return sample(env)


@case("checkpoint", r"checkpoint .*model\.ckpt: cannot be read safely")
def checkpoint_is_text(env):
    (env.out / "model.ckpt").write_text("not a checkpoint\n")
    return sample(env)


@case("checkpoint", r"checkpoint .*model\.ckpt: cannot be read safely")
def checkpoint_empty(env):
    (env.out / "model.ckpt").write_bytes(b"")
    return sample(env)


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@case("checkpoint", r"checkpoint .*model\.ckpt: cannot be read safely")
def checkpoint_with_a_pickled_payload(env):
    import torch

    torch.save({"format": "rho_workflow-checkpoint", "x": _Payload()}, env.out / "model.ckpt")
    return sample(env)


@case("checkpoint", r"checkpoint .*model\.ckpt: not a rho_workflow checkpoint")
def checkpoint_of_another_program(env):
    import torch

    torch.save({"weights": torch.zeros(3)}, env.out / "model.ckpt")
    return sample(env)


@case("checkpoint", r"checkpoint .*model\.ckpt: the entries \['config_json'\] are missing")
def checkpoint_without_config(env):
    import torch

    torch.save({"format": "rho_workflow-checkpoint", "format_version": 1, "model_state": {}},
               env.out / "model.ckpt")
    return sample(env)


@case("checkpoint", r"checkpoint .*model\.ckpt: its config is not valid JSON")
def checkpoint_config_not_json(env):
    import torch

    torch.save({"format": "rho_workflow-checkpoint", "format_version": 1, "model_state": {},
                "config_json": "{oops"}, env.out / "model.ckpt")
    return sample(env)


@case("checkpoint", r"checkpoint .*model\.ckpt: format version 99 is newer")
def checkpoint_from_the_future(env):
    import torch

    torch.save({"format": "rho_workflow-checkpoint", "format_version": 99}, env.out / "model.ckpt")
    return sample(env)


@case("checkpoint", r"checkpoint .*nowhere\.ckpt: no such file")
def api_load_missing_checkpoint(env):
    from rho_workflow.api import RhoModel

    RhoModel.load(env.tmp / "nowhere.ckpt")


# -- API requests ---------------------------------------------------------------------------

@case("api", r"sample: n=0 fields per point; the rule: n must be an integer >= 1")
def sample_zero_fields(env):
    env.model().sample({"index": -2.0, "amplitude": 1.0}, n=0)


@case("api", r"sample: n=-1 fields per point")
def sample_negative_count(env):
    env.model().sample({"index": -2.0, "amplitude": 1.0}, n=-1)


@case("api", r"sample: n=1\.5 fields per point; the rule: n must be an integer")
def sample_fractional_count(env):
    env.model().sample({"index": -2.0, "amplitude": 1.0}, n=1.5)


@case("api", r"point 0: parameter names must be exactly .*unexpected \['temperature'\]")
def sample_unknown_parameter(env):
    env.model().sample({"index": -2.0, "amplitude": 1.0, "temperature": 3.0}, n=1)


@case("api", r"point 0: parameter names must be exactly .*missing \['amplitude'\]")
def sample_missing_parameter(env):
    env.model().sample({"index": -2.0}, n=1)


@case("api", r"continuous parameter 'index': value 4\.0 .*outside the declared range")
def sample_outside_the_range(env):
    env.model().sample({"index": 4.0, "amplitude": 1.0}, n=1)


@case("api", r"sample: sampler='magic' is not known")
def sample_unknown_sampler(env):
    env.model().sample({"index": -2.0, "amplitude": 1.0}, n=1, sampler="magic")


@case("api", r"sample: steps=0; the rule")
def sample_zero_steps(env):
    env.model().sample({"index": -2.0, "amplitude": 1.0}, n=1, steps=0)


@case("api", r"log_prob: fields of shape \(1, 1, 8, 8\) \(rule: one field has shape \(1, 16, 16\)")
def log_prob_wrong_shape(env):
    env.model().log_prob(np.ones((1, 1, 8, 8)), {"index": -2.0, "amplitude": 1.0})


@case("api", r"unknown stages \['fit'\]")
def run_unknown_stage(env):
    from rho_workflow.pipeline import run_pipeline

    run_pipeline(env.spec, stages=["fit"], progress=False)


@case("api", r"sampling\.steps: must be >= 1")
def run_pipeline_bad_mapping(env):
    from rho_workflow.pipeline import run_pipeline

    run_pipeline(sections(env, sampling__steps=0), dry_run=True)


# -- outputs --------------------------------------------------------------------------------

@case("output", r"output\.filename: 'model\.ckpt' is the name of the trained checkpoint")
def filename_is_the_checkpoint(env):
    return dry(env, output__filename="model.ckpt")


@case("output", r"output\.filename: must be a plain file name inside output\.dir")
def filename_escapes_the_folder(env):
    return dry(env, output__filename="../../x.nc")


@case("output", r"output\.filename: .*run record")
def filename_is_the_run_record(env):
    return dry(env, output__filename="run.json")


@case("output", r"output\.format: must be one of \['netcdf', 'zarr'\]")
def unknown_output_format(env):
    return dry(env, output__format="hdf4")


@case("output", r"output\.netcdf_copy: true makes a netCDF copy of a zarr sweep, but "
                r"output\.format is 'netcdf'.*fix: set output\.format: zarr")
def netcdf_copy_of_a_netcdf_sweep(env):
    return dry(env, output__format="netcdf", output__netcdf_copy=True)


@case("output", r"output\.netcdf_copy: must be a boolean, got 'yes' \(str\)")
def netcdf_copy_not_a_boolean(env):
    return dry(env, output__format="zarr", output__netcdf_copy="yes")


@case("output", r"output\.complevel: must be <= 9, got 12")
def complevel_too_high(env):
    return dry(env, output__complevel=12)


@case("output", r"output\.dir: is required")
def output_dir_missing(env):
    return dry(env, output={})


@case("output", r"output\.dir .*(File exists|Not a directory)")
def output_dir_is_a_file(env):
    blocker = env.tmp / "afile"
    blocker.write_text("x")
    env.spec["output"]["dir"] = str(blocker / "out")
    return ["train", env.write()]


@case("output", r"model\.ckpt: the train stage would replace the existing model\.ckpt.*--overwrite")
def train_again_without_resume(env):
    return ["train", env.write()]


@case("output", r"samples\.nc: the sample stage would replace the existing samples\.nc")
def sample_again_without_resume(env):
    (env.out / "samples.nc").write_bytes(b"an earlier sweep")
    return ["sample", env.write()]


@case("output", r"manifest\.json: an interrupted sweep's finished chunks")
def sample_over_an_interrupted_sweep(env):
    (env.out / "parts").mkdir()
    (env.out / "parts" / "manifest.json").write_text("{}")
    return ["sample", env.write()]


@case("output", r"rho-workflow\.lock: the output folder is in use by another run: pid 1 on")
def folder_locked_by_a_live_process(env):
    import json
    import socket

    import psutil

    (env.out / "rho-workflow.lock").write_text(json.dumps({
        "pid": 1, "host": socket.gethostname(), "started": psutil.Process(1).create_time(),
        "since": 0, "command": "rho-workflow run other.yaml", "token": "t"}))
    return ["train", env.write(), "--overwrite"]


@case("output", r"rho-workflow\.lock: the output folder is in use by another run: pid 4242 on "
                r"host elsewhere")
def folder_locked_from_another_host(env):
    import json

    (env.out / "rho-workflow.lock").write_text(json.dumps({
        "pid": 4242, "host": "elsewhere", "started": 0, "since": 0, "command": "x", "token": "t"}))
    return ["train", env.write(), "--overwrite"]


@case("output", r"run\.json: the run record is not valid JSON")
def run_record_corrupted(env):
    (env.out / "run.json").write_text("{\"stages\": ")
    return ["train", env.write(), "--resume"]


@case("output", r"run\.json: the run record has no 'stages' mapping")
def run_record_of_another_shape(env):
    (env.out / "run.json").write_text("[]")
    return ["train", env.write(), "--resume"]


@case("output", r"manifest\.json: the manifest of the finished chunks is not valid JSON")
def parts_manifest_corrupted(env):
    (env.out / "parts").mkdir()
    (env.out / "parts" / "manifest.json").write_text("{\"chunks\": ")
    return ["sample", env.write(), "--resume"]


@case("output", r"manifest\.json: the finished chunks were written for another config")
def parts_of_another_sweep(env):
    import json

    (env.out / "parts").mkdir()
    (env.out / "parts" / "manifest.json").write_text(json.dumps({"fingerprint": "x", "chunks": {}}))
    return ["sample", env.write(), "--resume"]


@case("output", r"simulate\.out_dir .*(File exists|Not a directory)")
def simulation_folder_is_a_file(env):
    blocker = env.tmp / "afile"
    blocker.write_text("x")
    env.spec["simulate"] = {"kind": "lognormal-field", "out_dir": str(blocker / "sims"), "runs": 2,
                            "size": 8}
    return ["run", env.write()]


# -- the test -------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [pytest.param(c, id=c.id, marks=pytest.mark.bad_input(c.category))
                                 for c in CASES])
def test_bad_input_is_refused_with_one_clear_message(bad: Case, base, tmp_path, capsys):
    import re

    env = Env(base, tmp_path)
    try:
        argv = bad.run(env)
    except RhoWorkflowError as exc:  # through the Python API
        message = str(exc)
    else:
        assert argv is not None, "an API case must raise a RhoWorkflowError"
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err, err
        lines = [ln for ln in err.splitlines() if ln.startswith("rho-workflow: ")]
        assert len(lines) == 1 and lines[0].startswith("rho-workflow: error: "), err
        message = err[err.index("rho-workflow: error: "):]
    if os.environ.get("RHO_SHOW_MESSAGES"):
        print(f"\n@@ {bad.id}: {message.strip()[:400]}")
    assert re.search(bad.expect, message, re.S), message
    assert "weights_only=False" not in message


def test_the_table_has_at_least_60_cases_in_every_category():
    counts = {c: sum(1 for x in CASES if x.category == c)
              for c in ("config", "data", "checkpoint", "api", "output")}
    assert sum(counts.values()) >= 60 and min(counts.values()) >= 5, counts
    assert len({c.id for c in CASES}) == len(CASES)
