"""The pipeline file: one YAML document with the sections of a workflow run.

``data`` (netCDF sweep and preprocessing; validated by the data layer), ``model``,
``training``, ``sampling``, ``evaluation``, ``output`` and ``cluster``. Every section is
validated on load: unknown keys, wrong types and impossible values are collected and
reported together, each with its key path (``sampling.chunk_size``), the rule it breaks and
the value found. The resolved config (defaults filled in) is plain JSON; it is stored in every
checkpoint and every output of the run.

>>> cfg = PipelineConfig.from_dict(yaml.safe_load(open("pipelines/demo.yaml")))  # doctest: +SKIP
>>> cfg.sampling.members, cfg.cluster.name                                      # doctest: +SKIP
(8, 'local')
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

import yaml

from rho_workflow.atomic import fingerprint as config_fingerprint
from rho_workflow.diffusion.samplers import DEFAULT_SAMPLER
from rho_workflow.diffusion.samplers import SAMPLERS as SAMPLER_REGISTRY

from rho_workflow.training.trainer import TrainConfig
from rho_workflow.workflow.sweep import check_grid_spec
from rho_workflow.workflow.cluster import ClusterKind, cluster_from_config
from rho_workflow.workflow.schema import ConfigError, check_value, build_section, opt

__all__ = ["ConfigError", "PipelineConfig", "SimulateSection", "ModelSection", "TrainingSection", "SamplingSection",
           "EvaluationSection", "OutputSection", "load_pipeline", "config_fingerprint",
           "SECTIONS", "SAMPLERS"]

SECTIONS = ("name", "description", "simulate", "data", "model", "training", "sampling", "evaluation",
            "output", "cluster")
SAMPLERS = tuple(SAMPLER_REGISTRY)  # names from the one sampler registry


@dataclass
class SimulateSection:
    """Optional first stage: write a synthetic simulation sweep (``make-data``) to ``out_dir``.

    Demos and tests use it to make the netCDF files that the ``data`` section then reads.
    """

    kind: str = opt(types=(str,))
    out_dir: str = opt(types=(str,))
    runs: int = opt(64, types=(int,), ge=1)
    realizations: int = opt(4, types=(int,), ge=1)
    size: int = opt(32, types=(int,), ge=2)
    seed: int = opt(0, types=(int,), ge=0)

    def check(self, path: str) -> list[str]:
        from rho_workflow.data.make_data import ALL_KINDS

        if self.kind not in ALL_KINDS:
            return [f"{path}.kind: must be one of {list(ALL_KINDS)}, got {self.kind!r}"]
        return []


@dataclass
class ModelSection:
    """The network and diffusion process (``RhoModel.create`` options)."""

    encoder: str = opt("features", types=(str,), choices=("features", "hash"))
    prediction: str = opt("v", types=(str,), choices=("v", "eps", "x0"))
    schedule: str = opt("cosine", types=(str,), choices=("linear", "cosine", "sohl-dickstein"))
    T: int = opt(1000, types=(int,), ge=2)
    p_uncond: float = opt(0.1, types=(float,), ge=0.0, lt=1.0)
    network: dict | None = opt(None, types=(dict,), nullable=True)


@dataclass
class TrainingSection:
    """Where and how training runs; every other key is a :class:`TrainConfig` option.

    ``gpu`` requests ``resources={"GPU": 1}`` for each training task; ``workers`` > 1 trains
    data-parallel over that many Dask workers (torch.distributed, gloo on CPU, NCCL on GPU);
    ``timeout_s`` bounds the process-group rendezvous and collectives; a failed group is
    resubmitted from its last checkpoint up to ``max_attempts`` times in all.
    """

    gpu: bool = opt(False, types=(bool,))
    workers: int = opt(1, types=(int,), ge=1)
    backend: str = opt("auto", types=(str,), choices=("auto", "gloo", "nccl"))
    timeout_s: float = opt(300.0, types=(float,), gt=0)
    max_attempts: int = opt(2, types=(int,), ge=1)
    threads: int | None = opt(None, types=(int,), ge=1, nullable=True)
    options: dict = opt({}, types=(dict,))

    def check(self, path: str) -> list[str]:
        if self.backend == "nccl" and not self.gpu:
            return [f"{path}.backend: 'nccl' needs GPU workers; set {path}.gpu: true or use 'gloo'"]
        return []

    @property
    def train_config(self) -> TrainConfig:
        return TrainConfig.from_dict(self.options, path="training")

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "options"}
        return {**d, **self.train_config.to_dict()}


@dataclass
class SamplingSection:
    """A sweep: a Cartesian ``grid`` of parameter values or a ``table`` of points.

    ``grid`` maps each parameter to a list of values, ``{values: [...], units: ...}`` or a
    range ``{start, stop, num | step, units}``; ``table`` is a list of parameter dicts (or the
    path of a CSV file with one column per parameter) with ``table_units``. Every point gets
    ``members`` samples; sample ``m`` of point ``p`` is seeded by ``derive_seed(seed, p, m)``.
    The network is evaluated in fixed micro-batches of ``batch_size`` consecutive samples of the
    sweep, so that results do not depend on ``chunk_size`` (samples per Dask task, a multiple
    of ``batch_size``).
    """

    sampler: str = opt(DEFAULT_SAMPLER, types=(str,), choices=SAMPLERS)
    steps: int = opt(25, types=(int,), ge=1)
    guidance: float = opt(0.0, types=(float,), ge=0.0)
    members: int = opt(4, types=(int,), ge=1)
    seed: int = opt(0, types=(int,), ge=0)
    batch_size: int = opt(16, types=(int,), ge=1)
    chunk_size: int = opt(64, types=(int,), ge=1)
    allow_extrapolation: bool = opt(False, types=(bool,))
    grid: dict | None = opt(None, types=(dict,), nullable=True)
    table: list | str | None = opt(None, types=(list, str), nullable=True)
    table_units: dict = opt({}, types=(dict,))
    gpu: bool = opt(False, types=(bool,))
    threads: int = opt(1, types=(int,), ge=1)
    retries: int = opt(2, types=(int,), ge=0)

    def check(self, path: str) -> list[str]:
        problems = []
        if self.chunk_size % self.batch_size:
            problems.append(
                f"{path}.chunk_size: must be a multiple of {path}.batch_size ({self.batch_size}) so "
                f"that every chunk holds whole micro-batches, got {self.chunk_size}; fix: use "
                f"{max(1, round(self.chunk_size / self.batch_size)) * self.batch_size}")
        if (self.grid is None) == (self.table is None):
            problems.append(f"{path}: give exactly one of 'grid' (Cartesian product of values) or "
                            "'table' (list of points)")
        if self.grid is not None:
            problems.extend(check_grid_spec(self.grid, f"{path}.grid"))
        if isinstance(self.table, list):
            for i, row in enumerate(self.table):
                if not isinstance(row, Mapping) or not row:
                    problems.append(f"{path}.table[{i}]: must be a mapping of parameter names to "
                                    f"values, got {row!r}")
        for name, units in self.table_units.items():
            if not isinstance(units, str):
                problems.append(f"{path}.table_units.{name}: must be a unit string, got {units!r}")
        return problems


@dataclass
class EvaluationSection:
    """Generated against held-out runs: spectra, value distributions and, unless
    ``log_likelihood: none``, the model's log-likelihood of up to ``likelihood_fields``
    held-out fields per point (``ode``: exact, probability-flow ODE; ``bound``: the bound K)."""

    enabled: bool = opt(True, types=(bool,))
    split: str = opt("held_out", types=(str,), choices=("train", "validation", "held_out"))
    bins: int = opt(50, types=(int,), ge=2)
    figures: bool = opt(True, types=(bool,))
    max_points: int = opt(6, types=(int,), ge=1)
    log_likelihood: str = opt("ode", types=(str,), choices=("ode", "bound", "none"))
    likelihood_fields: int = opt(2, types=(int,), ge=1)


@dataclass
class OutputSection:
    """Where the run writes: store, checkpoint, sweep parts, consolidated sweep, evaluation."""

    dir: str = opt(types=(str,))
    format: str = opt("netcdf", types=(str,), choices=("netcdf", "zarr"))
    filename: str | None = opt(None, types=(str,), nullable=True)
    complevel: int = opt(4, types=(int,), ge=0, le=9)
    dtype: str = opt("float32", types=(str,), choices=("float32", "float64"))
    title: str | None = opt(None, types=(str,), nullable=True)
    institution: str | None = opt(None, types=(str,), nullable=True)
    keep_parts: bool = opt(False, types=(bool,))

    @property
    def root(self) -> Path:
        return Path(self.dir)

    @property
    def samples_path(self) -> Path:
        default = "samples.zarr" if self.format == "zarr" else "samples.nc"
        return self.root / (self.filename or default)

    @property
    def store_path(self) -> Path:
        return self.root / "store"

    @property
    def checkpoint_path(self) -> Path:
        return self.root / "model.ckpt"

    @property
    def parts_dir(self) -> Path:
        return self.root / "parts"

    @property
    def evaluation_dir(self) -> Path:
        return self.root / "evaluation"


@dataclass
class PipelineConfig:
    """A validated pipeline: one attribute per section (``data`` is the data layer's config)."""

    name: str
    description: str
    simulate: SimulateSection | None
    data: Any
    model: ModelSection
    training: TrainingSection
    sampling: SamplingSection
    evaluation: EvaluationSection
    output: OutputSection
    cluster: ClusterKind
    source: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str | None = None,
                  cluster: Mapping[str, Any] | None = None) -> "PipelineConfig":
        """Validate a pipeline mapping; ``cluster`` (if given) replaces its cluster section."""
        problems: list[str] = []
        if not isinstance(d, Mapping):
            raise ConfigError([f"the pipeline must be a mapping of sections, got {type(d).__name__}"],
                              source)
        unknown = sorted(set(d) - set(SECTIONS))
        if unknown:
            problems.append(f"unknown sections {unknown}; valid sections are {list(SECTIONS)}")
        name = d.get("name", Path(source).stem if source else "pipeline")
        if not isinstance(name, str) or not name:
            problems.append(f"name: must be a non-empty string, got {name!r}")
        description = d.get("description", "")
        if not isinstance(description, str):
            problems.append(f"description: must be a string, got {description!r}")
        simulate = (None if d.get("simulate") is None else
                    build_section(SimulateSection, d["simulate"], "simulate", problems))
        data = _data_section(d.get("data"), problems)
        model = build_section(ModelSection, d.get("model"), "model", problems)
        training = _training_section(d.get("training"), problems)
        sampling = build_section(SamplingSection, d.get("sampling"), "sampling", problems)
        evaluation = build_section(EvaluationSection, d.get("evaluation"), "evaluation", problems)
        output = build_section(OutputSection, d.get("output"), "output", problems)
        cluster_kind = None
        try:
            cluster_kind = cluster_from_config(cluster if cluster is not None else d.get("cluster"),
                                               path="cluster")
        except ConfigError as exc:
            problems.extend(exc.problems)
        if training is not None and sampling is not None and cluster_kind is not None:
            problems.extend(_cross_checks(training, sampling, cluster_kind))
        if problems:
            raise ConfigError(problems, source)
        return cls(name=name, description=description, simulate=simulate, data=data, model=model, training=training,
                   sampling=sampling, evaluation=evaluation, output=output, cluster=cluster_kind,
                   source=source)

    def to_dict(self) -> dict[str, Any]:
        """The resolved config (defaults filled in), plain JSON."""
        return {
            "name": self.name,
            "description": self.description,
            "simulate": None if self.simulate is None else dataclasses.asdict(self.simulate),
            "data": _data_to_dict(self.data),
            "model": dataclasses.asdict(self.model),
            "training": self.training.to_dict(),
            "sampling": dataclasses.asdict(self.sampling),
            "evaluation": dataclasses.asdict(self.evaluation),
            "output": dataclasses.asdict(self.output),
            "cluster": self.cluster.to_dict(),
        }

    def fingerprint(self, *sections: str) -> str:
        """SHA-256 of the resolved JSON of the given sections (all when none is given)."""
        resolved = self.to_dict()
        chosen = {k: resolved[k] for k in (sections or tuple(resolved))}
        return config_fingerprint(chosen)


def load_pipeline(path: str | os.PathLike, cluster: Mapping[str, Any] | None = None) -> PipelineConfig:
    """Read and validate a pipeline YAML file (``cluster`` overrides its cluster section)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pipeline file {path} does not exist")
    try:
        d = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError([f"not valid YAML: {exc}"], str(path)) from None
    return PipelineConfig.from_dict(d or {}, source=str(path), cluster=cluster)


def _training_section(given: Any, problems: list[str]) -> TrainingSection | None:
    own = {f.name for f in fields(TrainingSection)} - {"options"}
    given = {} if given is None else given
    given = dict(given) if isinstance(given, Mapping) else given
    if not isinstance(given, dict):
        problems.append(f"training: must be a mapping of keys to values, got {given!r}")
        return None
    if "options" in given:
        problems.append("training.options: not a key; write training options directly under training")
        given.pop("options")
    options = {k: given.pop(k) for k in list(given) if k not in own}
    trainer_keys = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(options) - trainer_keys)
    if unknown:
        problems.append(f"training: unknown keys {unknown}; valid keys are {sorted(own | trainer_keys)}")
        options = {k: v for k, v in options.items() if k in trainer_keys}
    for f in fields(TrainConfig):
        if f.name in options and f.default is not dataclasses.MISSING:
            rule = {"types": (type(f.default),), "choices": None, "ge": None, "gt": None,
                    "le": None, "lt": None, "nullable": False}
            value, found = check_value(options[f.name], rule, f"training.{f.name}")
            problems.extend(found)
            if found:
                options.pop(f.name)
            else:
                options[f.name] = value
    section = build_section(TrainingSection, given, "training", problems)
    if section is None:
        return None
    section.options = options
    try:
        section.train_config
    except (ValueError, TypeError) as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        problems.extend(lines[1:] if len(lines) > 1 else lines)
    return section


def _cross_checks(training: TrainingSection, sampling: SamplingSection,
                  cluster: ClusterKind) -> list[str]:
    problems = []
    try:
        batch = training.train_config.batch_size
    except (ValueError, TypeError):
        return problems
    if batch % training.workers:
        problems.append(f"training.batch_size: must be divisible by training.workers "
                        f"({training.workers}) so each rank takes an equal share of the global "
                        f"batch, got {batch}")
    for key, wants in (("training.gpu", training.gpu), ("sampling.gpu", sampling.gpu)):
        if wants and cluster.provides("GPU") is False:
            problems.append(f"{key}: tasks will request resources={{'GPU': 1}} but the {cluster.name} "
                            "cluster's workers declare no GPU resource (they would wait forever); "
                            "add resources: {GPU: 1} to the cluster section")
    available = cluster.worker_count()
    if available is not None and training.workers > available:
        problems.append(f"training.workers: {training.workers} data-parallel ranks need as many "
                        f"Dask workers, but the cluster section starts {available}; raise the "
                        "cluster's worker count or lower training.workers")
    return problems


def _data_section(given: Any, problems: list[str]) -> Any:
    from rho_workflow.data.config import ConfigError as DataConfigError
    from rho_workflow.data.config import DataConfig  # the data layer owns its schema

    if given is None:
        problems.append("data: is required (where the simulation sweep is and how to preprocess it)")
        return None
    try:
        return DataConfig.from_dict(given, path="data")
    except DataConfigError as exc:
        problems.extend(exc.problems)
        return None


def _data_to_dict(data: Any) -> Any:
    if hasattr(data, "to_dict"):
        return data.to_dict()
    if dataclasses.is_dataclass(data):
        return dataclasses.asdict(data)
    return data
