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

import os
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, Union

from pydantic import Field, field_validator, model_validator

from rho_workflow.atomic import fingerprint as config_fingerprint
from rho_workflow.diffusion.samplers import DEFAULT_SAMPLER, DEFAULT_STEPS
from rho_workflow.diffusion.samplers import SAMPLERS as SAMPLER_REGISTRY
from rho_workflow.diffusion.schedules import SPACINGS

from rho_workflow.data.config import DataConfig
from rho_workflow.training.trainer import TrainConfig
from rho_workflow.workflow.sweep import check_grid_spec
from rho_workflow.workflow.cluster import (CLUSTER_KINDS, AddressKind, ClusterKind, LocalKind, PBSKind,
                                           SchedulerFileKind, SLURMKind, cluster_from_config)
from rho_workflow.errors import ConfigError
from rho_workflow.sections import Section, validate_section
from rho_workflow.yamlio import load_yaml

__all__ = ["ConfigError", "PipelineConfig", "SimulateSection", "ModelSection", "TrainingSection", "SamplingSection",
           "EvaluationSection", "OutputSection", "load_pipeline", "config_fingerprint",
           "SECTIONS", "SAMPLERS"]

SECTIONS = ("name", "description", "simulate", "data", "model", "training", "sampling", "evaluation",
            "output", "cluster")
SAMPLERS = tuple(SAMPLER_REGISTRY)  # names from the one sampler registry


class SimulateSection(Section):
    """Optional first stage: write a synthetic simulation sweep (``make-data``) to ``out_dir``.

    Demos and tests use it to make the netCDF files that the ``data`` section then reads.
    """

    kind: str
    out_dir: str
    runs: int = Field(64, ge=1)
    realizations: int | None = Field(None, ge=1)  # None: make_data.default_realizations(kind, 4)
    size: int = Field(32, ge=2)
    seed: int = Field(0, ge=0)

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        from rho_workflow.data.make_data import ALL_KINDS

        if kind not in ALL_KINDS:
            raise ValueError(f"must be one of {list(ALL_KINDS)}, got {kind!r}")
        return kind


class ModelSection(Section):
    """The network and diffusion process (``RhoModel.create`` options)."""

    encoder: Literal["features", "hash"] = "features"
    prediction: Literal["v", "eps", "x0"] = "v"
    schedule: Literal["linear", "cosine", "sohl-dickstein"] = "cosine"
    T: int = Field(1000, ge=2)
    p_uncond: float = Field(0.1, ge=0.0, lt=1.0)
    network: dict[str, Any] | None = None


class TrainingSection(TrainConfig):
    """Where and how training runs; every other key is a :class:`TrainConfig` option.

    ``gpu`` requests ``resources={"GPU": 1}`` for each training task; ``workers`` > 1 trains
    data-parallel over that many Dask workers (torch.distributed, gloo on CPU, NCCL on GPU);
    ``timeout_s`` bounds the process-group rendezvous and collectives; a failed group is
    resubmitted from its last checkpoint up to ``max_attempts`` times in all.
    """

    gpu: bool = False
    workers: int = Field(1, ge=1)
    backend: Literal["auto", "gloo", "nccl"] = "auto"
    timeout_s: float = Field(300.0, gt=0)
    max_attempts: int = Field(2, ge=1)
    threads: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _nccl_needs_gpu(self) -> "TrainingSection":
        if self.backend == "nccl" and not self.gpu:
            raise ValueError("{path}.backend: 'nccl' needs GPU workers; set {path}.gpu: true or "
                             "use 'gloo'")
        return self

    @property
    def train_config(self) -> TrainConfig:
        """The options of the training loop alone."""
        return TrainConfig(**{k: getattr(self, k) for k in TrainConfig.model_fields})


class ConditioningSection(Section):
    """Observations every field of the sweep is conditioned on (inpainting, denoising, stations).

    ``observations`` is a netCDF file in the convention of
    :func:`rho_workflow.data.observations.read_observations`: the model's field variable on the
    grid (finite cells known exactly, or with an ``<field>_error`` variable: noisy), or a
    station table along one dim with coordinate variables named like the grid dims and
    ``<field>_error``; values and positions in any units convertible to the model's.
    ``cg_iters`` bounds the conjugate-gradient steps per network call
    (:mod:`rho_workflow.diffusion.posterior`).
    """

    observations: str
    variable: str | None = None
    cg_iters: int = Field(20, ge=1)

    @field_validator("observations")
    @classmethod
    def _exists(cls, v: str) -> str:
        if not Path(v).is_file():
            raise ValueError(f"observation file {v!r} does not exist (relative paths are taken from the "
                             f"current directory, {os.getcwd()}); write the observations first or fix the path")
        return v


class SamplingSection(Section):
    """A sweep: a Cartesian ``grid`` of parameter values or a ``table`` of points.

    ``grid`` maps each parameter to a list of values, ``{values: [...], units: ...}`` or a
    range ``{start, stop, num | step, units}``; ``table`` is a list of parameter dicts (or the
    path of a CSV file with one column per parameter) with ``table_units``. Every point gets
    ``members`` samples; sample ``m`` of point ``p`` is seeded by ``derive_seed(seed, p, m)``.
    With ``conditioning`` every sample is drawn from the model conditioned on observations.
    ``spacing`` chooses the noise levels; ``fitted`` takes the levels fitted on the exact
    Gaussian denoiser (:mod:`rho_workflow.diffusion.fitted_levels`), stored for dpmpp_2m,
    dpmpp_3m, unipc and unipc_bh1 at 5-16 steps. Left out, it is ``fitted`` where those exist
    and the sampler's own (e.g. ``log-snr``) otherwise; the default sampler is ``unipc`` with
    12 steps.
    The network is evaluated in fixed micro-batches of ``batch_size`` consecutive samples of the
    sweep, so that results do not depend on ``chunk_size`` (samples per Dask task, a multiple
    of ``batch_size``).
    """

    sampler: Literal[SAMPLERS] = DEFAULT_SAMPLER  # type: ignore[valid-type]
    steps: int = Field(DEFAULT_STEPS, ge=1)
    spacing: Literal[SPACINGS] | None = None  # type: ignore[valid-type]  # None: fitted where stored, else the sampler's own
    guidance: float = Field(0.0, ge=0.0)
    members: int = Field(4, ge=1)
    seed: int = Field(0, ge=0)
    batch_size: int = Field(16, ge=1)
    chunk_size: int = Field(64, ge=1)
    allow_extrapolation: bool = False
    grid: dict[str, Any] | None = None
    table: list[Any] | str | None = None
    table_units: dict[str, Any] = Field(default_factory=dict)
    gpu: bool = False
    threads: int = Field(1, ge=1)
    retries: int = Field(2, ge=0)
    conditioning: ConditioningSection | None = None

    @model_validator(mode="after")
    def _check(self) -> "SamplingSection":
        problems = self.check("{path}")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def check(self, path: str) -> list[str]:
        """Cross-field rules: whole micro-batches per chunk, one of grid or table."""
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


class EvaluationSection(Section):
    """Generated against held-out runs: spectra, value distributions and, unless
    ``log_likelihood: none``, the model's log-likelihood of up to ``likelihood_fields``
    held-out fields per point (``ode``: exact, probability-flow ODE; ``bound``: the bound K).

    ``compare`` adds variants scored at the same points, into the same metrics files:
    ``ddpm`` samples the model with ``reference_steps`` ancestral DDPM steps (the reference
    sampler the fast default is measured against); ``hash_encoder`` trains a twin of the model
    with the rho-Diffusion SHA-512 hash encoder (same network, data and training section) and
    samples it with the pipeline's sampler. Each costs about as much as the sampling resp.
    training it repeats.

    ``simulations: deterministic`` declares that the simulator has no randomness (a run at a
    parameter point is one exact field): the noise floor of every score is then 0 (two true
    sets are equal), also where a point has a single simulated field; ``stochastic`` (default)
    estimates floors from the simulated fields, undefined at a point with only one."""

    enabled: bool = True
    split: Literal["train", "validation", "held_out"] = "held_out"
    bins: int = Field(50, ge=2)
    figures: bool = True
    max_points: int = Field(6, ge=1)
    log_likelihood: Literal["ode", "bound", "none"] = "ode"
    likelihood_fields: int = Field(2, ge=1)
    members: int | None = Field(None, ge=2)  # None: enough to resolve the noise floor
    training_points: int = Field(2, ge=0)    # training points evaluated beside the split's
    compare: list[Literal["ddpm", "hash_encoder"]] = Field(default_factory=list)
    reference_steps: int = Field(1000, ge=2)  # steps of the ancestral DDPM of compare: [ddpm]
    simulations: Literal["stochastic", "deterministic"] = "stochastic"

    @field_validator("compare")
    @classmethod
    def _unique_compare(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"lists {value} with a repeat; name each variant once")
        return value


#: What a run writes into ``output.dir`` besides the sweep: a file name in this set (or a
#: name starting with one of them and a dot, like the temporaries) is not free for the sweep.
RUN_ARTEFACTS = {"store": "the training store", "model.ckpt": "the trained checkpoint",
                 "parts": "the sweep's parts and manifest", "evaluation": "the evaluation",
                 "inference": "the posteriors of rho-workflow infer",
                 "run.json": "the run record", "rho-workflow.lock": "the lock of the output folder",
                 "stop-request": "the stop request of a run that was signalled",
                 "previous": "the earlier outputs replaced with --overwrite"}


class OutputSection(Section):
    """Where the run writes: store, checkpoint, sweep parts, consolidated sweep, evaluation.

    ``units`` maps field variables to the units the sweep is written in (e.g. ``{tas: degC}``
    for a model trained in K), converted by the project's unit registry; it must convert from
    the variable's ``data.units`` (checked on load, so ``--dry-run`` reports it).

    ``filename`` (the consolidated sweep) is a plain file name inside ``dir``, distinct from
    the run's other artefacts (:data:`RUN_ARTEFACTS`).

    ``format`` is ``netcdf`` (one CF file; the chunk tasks write parts, which this process
    then consolidates: a serial step that reads and writes the sweep once more) or ``zarr``
    (a CF zarr store; each chunk task writes its region of the store itself, and nothing
    passes through this process: the format for sweeps larger than one machine).
    ``netcdf_copy: true`` (``format: zarr`` only) also writes the store consolidated into a
    netCDF file beside it, ``samples.nc`` for ``samples.zarr`` (:attr:`netcdf_copy_path`):
    the same file as ``format: netcdf`` writes, made by one serial read of the store.
    """

    dir: str
    units: dict[str, str] = Field(default_factory=dict)
    format: Literal["netcdf", "zarr"] = "netcdf"
    filename: str | None = None
    complevel: int = Field(4, ge=0, le=9)
    dtype: Literal["float32", "float64"] = "float32"
    title: str | None = None
    institution: str | None = None
    keep_parts: bool = False
    netcdf_copy: bool = False

    @model_validator(mode="after")
    def _copy_needs_zarr(self) -> "OutputSection":
        if self.netcdf_copy and self.format != "zarr":
            raise ValueError(
                f"{{path}}.netcdf_copy: true makes a netCDF copy of a zarr sweep, but "
                f"{{path}}.format is {self.format!r}, which writes a netCDF file already; fix: set "
                "{path}.format: zarr (each chunk task then writes its region of the store), or "
                "drop {path}.netcdf_copy")
        if self.netcdf_copy and self.samples_path.suffix == ".nc":
            raise ValueError(
                f"{{path}}.filename: the zarr store {self.samples_path.name!r} and its netCDF copy "
                "(the same name with .nc) would share one name; fix: give the store another "
                "suffix, e.g. 'samples.zarr'")
        return self

    @field_validator("filename")
    @classmethod
    def _plain_name(cls, name: str | None) -> str | None:
        if name is None:
            return None
        if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
            raise ValueError(f"must be a plain file name inside output.dir (no folders, no "
                             f"'..'), got {name!r}; fix: give a name such as 'samples.nc' and "
                             "choose the folder with output.dir")
        if name.startswith("."):
            raise ValueError(f"must not start with '.' (hidden names are the temporaries of "
                             f"atomic writes), got {name!r}")
        taken = RUN_ARTEFACTS.get(name) or next(
            (what for base, what in RUN_ARTEFACTS.items() if name.startswith(base + ".")), None)
        if taken:
            raise ValueError(f"{name!r} is the name of {taken} in output.dir; the sweep would "
                             f"overwrite it; fix: choose another name (e.g. 'samples.nc'); "
                             f"taken names: {sorted(RUN_ARTEFACTS)}")
        return name

    @property
    def root(self) -> Path:
        return Path(self.dir)

    @property
    def samples_path(self) -> Path:
        default = "samples.zarr" if self.format == "zarr" else "samples.nc"
        return self.root / (self.filename or default)

    @property
    def netcdf_copy_path(self) -> Path | None:
        """The netCDF copy of a zarr sweep (``netcdf_copy``): its name with ``.nc``."""
        if not self.netcdf_copy:
            return None
        return self.samples_path.with_suffix(".nc")

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


ClusterSection = Annotated[Union[LocalKind, AddressKind, SchedulerFileKind, SLURMKind, PBSKind],
                          Field(description="a cluster kind and its options (see `kind`)")]


class PipelineConfig(Section):
    """A validated pipeline: one attribute per section, each a typed model."""

    name: str = "pipeline"
    description: str = ""
    simulate: SimulateSection | None = None
    data: DataConfig
    model: ModelSection = Field(default_factory=ModelSection)
    training: TrainingSection = Field(default_factory=TrainingSection)
    sampling: SamplingSection
    evaluation: EvaluationSection = Field(default_factory=EvaluationSection)
    output: OutputSection
    cluster: ClusterSection = Field(default_factory=LocalKind)
    source: str | None = Field(None, exclude=True)

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
        sections: dict[str, Any] = {}
        if d.get("data") is None:
            problems.append("data: is required (where the simulation sweep is and how to "
                            "preprocess it)")
        for key, build in _BUILDERS.items():
            given = cluster if key == "cluster" and cluster is not None else d.get(key)
            if given is None and key in ("simulate", "data"):
                sections[key] = None
                continue
            try:
                sections[key] = build(given, key)
            except ConfigError as exc:
                problems.extend(exc.problems)
                sections[key] = None
        if sections.get("data") is not None and sections.get("output") is not None:
            problems.extend(_output_units_problems(sections["data"], sections["output"]))
        training, sampling, cluster_kind = (sections[k] for k in ("training", "sampling", "cluster"))
        if training is not None and sampling is not None and cluster_kind is not None:
            problems.extend(_cross_checks(training, sampling, cluster_kind))
        model = sections.get("model")
        if model is not None and sampling is not None and sampling.guidance and not model.p_uncond:
            problems.append(f"sampling.guidance: {sampling.guidance} needs the unconditional model, which "
                            "model.p_uncond 0 never trains (no condition dropout); set sampling.guidance "
                            "0 or model.p_uncond > 0 (e.g. 0.1)")
        if problems:
            raise ConfigError(problems, source)
        return cls.model_construct(name=name, description=description, source=source, **sections)

    def to_dict(self) -> dict[str, Any]:
        """The resolved config (defaults filled in), plain JSON."""
        return {
            "name": self.name,
            "description": self.description,
            "simulate": None if self.simulate is None else self.simulate.model_dump(),
            "data": self.data.to_dict(),
            "model": self.model.model_dump(),
            "training": self.training.to_dict(),
            "sampling": self.sampling.model_dump(),
            "evaluation": self.evaluation.model_dump(),
            "output": self.output.model_dump(),
            "cluster": self.cluster.to_dict(),
        }

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """The JSON Schema of the pipeline file (for editors that validate YAML)."""
        schema = cls.model_json_schema()
        schema["properties"].pop("source", None)
        for kind, model in CLUSTER_KINDS.items():
            definition = schema.get("$defs", {}).get(model.__name__)
            if definition is not None:
                definition.setdefault("properties", {})["kind"] = {"const": kind}
                definition["properties"] = {"kind": definition["properties"].pop("kind"),
                                            **definition["properties"]}
        return schema

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
    d = load_yaml(path.read_text(), str(path))
    return PipelineConfig.from_dict(d or {}, source=str(path), cluster=cluster)


def _output_units_problems(data: DataConfig, output: OutputSection) -> list[str]:
    """``output.units``: a field variable each, in units its training units convert to."""
    from rho_workflow.data.units import UnitsError, linear_conversion

    problems = []
    for var, units in output.units.items():
        key = f"output.units.{var}"
        if var not in data.variables:
            problems.append(f"{key}: {var!r} is not a field variable {list(data.variables)}; "
                            "fix: name one of data.variables")
            continue
        try:
            linear_conversion(data.units[var], units)
        except UnitsError as exc:
            problems.append(f"{key}: value {units!r} cannot hold {var!r}, trained in "
                            f"{data.units[var]!r} (rule: output units must convert from the "
                            f"training units; {exc.reason}); fix: give units of the same "
                            f"dimension, e.g. {data.units[var]!r}")
    return problems


def _cross_checks(training: TrainingSection, sampling: SamplingSection,
                  cluster: ClusterKind) -> list[str]:
    problems = []
    batch = training.batch_size
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


_BUILDERS = {
    "simulate": lambda given, path: validate_section(SimulateSection, given, path),
    "data": lambda given, path: DataConfig.from_dict(given, path=path),
    "model": lambda given, path: validate_section(ModelSection, given, path),
    "training": lambda given, path: validate_section(TrainingSection, given, path),
    "sampling": lambda given, path: validate_section(SamplingSection, given, path),
    "evaluation": lambda given, path: validate_section(EvaluationSection, given, path),
    "output": lambda given, path: validate_section(OutputSection, given, path),
    "cluster": lambda given, path: cluster_from_config(given, path=path),
}
