"""Stage order, resume and progress of a pipeline: simulate, preprocess, train, sample, evaluate.

>>> from rho_workflow.pipeline import run_pipeline
>>> summary = run_pipeline("pipelines/demo.yaml")                        # doctest: +SKIP
>>> summary = run_pipeline(config_dict, stages=["sample"], resume=True)  # doctest: +SKIP

Each stage reads what the previous one wrote under ``output.dir`` (store, checkpoint) and
records itself in ``output.dir/run.json`` with the fingerprint of the config it ran with and
the SHA-256 of the artefact it wrote. With ``resume`` a stage whose record matches -- config
and artefact both -- is skipped (an artefact damaged since is moved to ``previous/`` and its
stage reruns), training continues from its last checkpoint and a sweep skips its finished
chunks. Without ``resume`` an existing checkpoint or sweep is replaced only with
``overwrite`` (the earlier one is kept as ``previous/<name>``). A run holds the lock of
``output.dir`` (:mod:`rho_workflow.workflow.lock`); SIGTERM (a batch job's walltime) makes
training checkpoint and stop, and any other stage stop where it is; ``--resume`` continues.
:meth:`Pipeline.plan` is the ``--dry-run``: the resolved config and the tasks, chunks and
resources of every stage, computed without running anything.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from rho_workflow.config import PipelineConfig, load_pipeline
from rho_workflow.atomic import file_sha256
from rho_workflow.errors import RhoWorkflowError, RunInterrupted
from rho_workflow.workflow import stages
from rho_workflow.workflow.lock import output_lock
from rho_workflow.workflow.run_record import RunRecord

__all__ = ["Pipeline", "run_pipeline", "STAGES", "PipelineError", "OutputError"]

STAGES = ("simulate", "preprocess", "train", "sample", "evaluate")
logger = logging.getLogger("rho_workflow")


#: A stage cannot run (a missing input, a failed task); the message says what to do.
PipelineError = stages.StageError


class OutputError(RhoWorkflowError, OSError):
    """Writing an output failed (disk full, permission): names the path and the config key."""


class Pipeline:
    """A validated pipeline and the methods that run its stages on a Dask client."""

    def __init__(self, config: PipelineConfig, progress: bool = True):
        self.config = config
        self.progress = progress
        self.out = config.output
        self._planned_space: Any = None  # the dry run's parameter space, from the files
        self._planned_shape: tuple[int, ...] | None = None  # and the fields' (C, *spatial)
        self.record = RunRecord(self.out.root, config.name)
        self._training = False

    @classmethod
    def from_source(cls, source: str | Path | Mapping[str, Any],
                    cluster: Mapping[str, Any] | None = None, progress: bool = True) -> "Pipeline":
        """From a YAML path or a mapping (``cluster`` replaces the cluster section)."""
        if isinstance(source, Mapping):
            return cls(PipelineConfig.from_dict(source, cluster=cluster), progress)
        return cls(load_pipeline(source, cluster=cluster), progress)

    # -- bookkeeping ---------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.record.path

    @property
    def stop_path(self) -> Path:
        """Written on SIGTERM; a training task that sees it checkpoints and stops."""
        return self.out.root / "stop-request"

    def fingerprints(self) -> dict[str, str]:
        """What each stage's result depends on (config sections, chained down the stages)."""
        from rho_workflow.config import config_fingerprint

        c = self.config.to_dict()
        simulate = config_fingerprint(c["simulate"])
        preprocess = config_fingerprint([simulate, c["data"]])
        train = config_fingerprint([preprocess, c["model"], c["training"]])
        return {"simulate": simulate, "preprocess": preprocess, "train": train}

    # -- plan (--dry-run) -----------------------------------------------------------------------
    def plan(self) -> dict[str, Any]:
        """The resolved config and, per stage, its tasks, chunks and resources (plain data)."""
        cfg = self.config
        stages: dict[str, Any] = {}
        if cfg.simulate is not None:
            stages["simulate"] = {"tasks": 1, "where": "this process",
                                  "writes": f"{cfg.simulate.runs} {cfg.simulate.kind} runs to "
                                            f"{cfg.simulate.out_dir}"}
        files = sorted({f for pattern in cfg.data.files for f in glob.glob(pattern)})
        stages["preprocess"] = {"files": len(files) if files else "written by the simulate stage",
                                "graph": "one Dask graph: read, check, normalize, write",
                                "writes": str(self.out.store_path)}
        if files:  # metadata only: samples, split sizes and the parameter space
            from rho_workflow.workflow.stages import check_split, plan_data

            data_plan, self._planned_space = plan_data(cfg.data)
            self._planned_shape = tuple(data_plan["field_shape"])
            stages["preprocess"].update(data_plan)
            check_split(data_plan["split"], cfg.data, cfg.evaluation, cfg.training)
        t = cfg.training
        stages["train"] = {"tasks": t.workers,
                           "mode": "data-parallel (torch.distributed, "
                                   f"{'nccl' if t.gpu and t.backend != 'gloo' else 'gloo'})"
                           if t.workers > 1 else "one task",
                           "resources": {"GPU": 1} if t.gpu else "any worker",
                           "steps": t.train_config.steps, "global_batch": t.train_config.batch_size,
                           "writes": str(self.out.checkpoint_path)}
        stages["train"]["network"] = (self._check_network(use_store=False)
                                      or "built and checked when the data's shape is known")
        sweep = self._sweep_plan(for_dry_run=True)
        stages["sample"] = {"description": sweep.describe(), "tasks": len(sweep.chunks),
                            "samples": sweep.n_samples,
                            "resources": {"GPU": 1} if cfg.sampling.gpu else "any worker",
                            "retries": cfg.sampling.retries,
                            "writes": str(self.out.samples_path)}
        if sweep.conditioning is not None:
            if self.out.checkpoint_path.is_file():  # the observations are checked against the model now
                from rho_workflow.workflow.stages import conditioning_attrs

                stages["sample"]["conditioning"] = conditioning_attrs(self.out.checkpoint_path,
                                                                      sweep.conditioning)["conditioning"]
            else:
                stages["sample"]["conditioning"] = (f"{sweep.conditioning['observations']}: checked against "
                                                    "the model when the sample stage starts")
        if cfg.evaluation.enabled:
            stages["evaluate"] = {"reference": f"{cfg.evaluation.split} split of the store, up to "
                                               f"{cfg.evaluation.max_points} parameter points",
                                  "writes": str(self.out.evaluation_dir)}
            compare = {"ddpm": f"the model with {cfg.evaluation.reference_steps}-step ancestral DDPM",
                       "hash_encoder": f"a twin trained with the SHA-512 hash encoder "
                                       f"({cfg.training.train_config.steps} more training steps)"}
            if cfg.evaluation.compare:
                stages["evaluate"]["compares with"] = "; ".join(compare[k] for k in cfg.evaluation.compare)
        cluster: dict[str, Any] = {"description": cfg.cluster.describe()}
        if hasattr(cfg.cluster, "job_script"):
            cluster["job_script"] = cfg.cluster.job_script()
        return {"config": cfg.to_dict(), "cluster": cluster, "stages": stages}

    def _param_space(self, for_dry_run: bool = False) -> Any:
        """The model's parameter space: from the checkpoint, else the store, else (dry run
        only) the data section's names and units with open ranges."""
        from rho_workflow.params import Parameter, ParamSpace

        ckpt = self.out.checkpoint_path
        if ckpt.is_file():
            from rho_workflow.training.checkpoint import load_checkpoint

            return ParamSpace.from_dict(load_checkpoint(ckpt)["config"]["param_space"])
        if self.out.store_path.exists():
            from rho_workflow.data.store import open_store

            with open_store(self.out.store_path) as store:
                return store.param_space
        if not for_dry_run:
            raise PipelineError(f"no checkpoint at {ckpt}: run the train stage first")
        if self._planned_space is not None:  # read from the files' metadata
            return self._planned_space
        params = []
        for name, src in self.config.data.params.items():
            values = self._grid_values(name)
            if src.source == "time":
                params.append(Parameter(name, src.units, "continuous", low=-1e300, high=1e300,
                                        calendar=src.calendar or "standard"))
            elif src.kind == "categorical" or any(isinstance(v, str) for v in values):
                params.append(Parameter(name, src.units, "categorical", values=tuple(values)))
            else:
                params.append(Parameter(name, src.units, "continuous", low=-1e300, high=1e300))
        return ParamSpace(params)

    def _check_network(self, use_store: bool) -> str | None:
        """Build the network for the data's shape when that is known (see
        :meth:`_network_check_input`); a bad entry raises ConfigError. Its one-line
        description, or None when the shape is not known yet."""
        network_on = self._network_check_input(use_store)
        if network_on is None:
            return None
        from rho_workflow.workflow.stages import check_network

        return check_network(self.config.model, network_on[1], network_on[0], source=self.config.source)

    def _network_check_input(self, use_store: bool) -> tuple[tuple[int, ...], Any] | None:
        """The field shape ``(C, *spatial)`` and parameter space the train stage will build the
        network for, known before it runs: the store's when no preprocess stage will rewrite
        it (``use_store``), else the simulate section's sweep, else the data files' metadata
        (read once: the dry run's plan has it); None when none of them is there yet."""
        cfg = self.config
        if use_store and self.out.store_path.exists():
            from rho_workflow.data.store import open_store

            with open_store(self.out.store_path) as store:
                return (len(store.variables), *store.shape), store.param_space
        from rho_workflow.data.synthetic import KINDS, field_spec

        if cfg.simulate is not None and cfg.simulate.kind in KINDS:  # climate kinds: from their files
            spec = field_spec(cfg.simulate.kind, cfg.simulate.size)
            return (len(cfg.data.variables), *spec.shape), spec.param_space()
        if self._planned_shape is None and any(glob.glob(pattern) for pattern in cfg.data.files):
            from rho_workflow.workflow.stages import plan_data

            data_plan, self._planned_space = plan_data(cfg.data)
            self._planned_shape = tuple(data_plan["field_shape"])
        return None if self._planned_shape is None else (self._planned_shape, self._planned_space)

    def _grid_values(self, name: str) -> list:
        grid = self.config.sampling.grid or {}
        spec = grid.get(name, [])
        values = spec if isinstance(spec, list) else spec.get("values", [0.0])
        if isinstance(self.config.sampling.table, list):
            values = [row.get(name) for row in self.config.sampling.table]
        return list(dict.fromkeys(values)) or [0.0]

    def _sweep_plan(self, for_dry_run: bool = False) -> Any:
        from rho_workflow.workflow.sweep import SweepRequest, plan_sweep

        request = SweepRequest.from_section(self.config.sampling)
        return plan_sweep(request, self._param_space(for_dry_run))

    # -- running --------------------------------------------------------------------------------
    def run(self, stages: Sequence[str] | None = None, *, resume: bool = False,
            overwrite: bool = False, client: Any = None) -> dict[str, Any]:
        """Run ``stages`` (default: all, in order) on ``client`` or on the configured cluster.

        ``resume`` skips finished stages and chunks; ``overwrite`` lets a stage replace an
        earlier checkpoint or sweep (kept as ``previous/<name>``). The run holds the lock of
        ``output.dir``; SIGTERM stops it with :class:`~rho_workflow.errors.RunInterrupted`.
        """
        stages = list(stages or STAGES)
        unknown = [s for s in stages if s not in STAGES]
        if unknown:
            raise PipelineError(f"unknown stages {unknown}; valid stages are {list(STAGES)}")
        stages = [s for s in STAGES if s in stages]
        if "simulate" in stages and self.config.simulate is None:
            stages.remove("simulate")
        if "evaluate" in stages and not self.config.evaluation.enabled:
            stages.remove("evaluate")
        results: dict[str, Any] = {}
        t0 = time.perf_counter()
        command = f"rho_workflow {'/'.join(stages)} {self.config.source or self.config.name}"
        # a bad model.network entry stops the run now (or after simulate, where only its files
        # tell the shape), not when the train stage starts
        must_check = "train" in stages and (overwrite or not self.out.checkpoint_path.is_file())
        use_store = "preprocess" not in stages  # else the store is rebuilt from the config first
        from rho_workflow.data.synthetic import KINDS

        after_simulate = "simulate" in stages and self.config.simulate.kind not in KINDS  # its new files tell
        checked = must_check and not after_simulate and self._check_network(use_store) is not None
        with self._naming_output_errors(), output_lock(self.out.root, command), \
                self._stop_on_sigterm():
            if "simulate" in stages:
                results["simulate"] = self.simulate(resume=resume)
                if must_check and not checked:
                    self._check_network(use_store)
            rest = [s for s in stages if s != "simulate"]
            if rest:
                with self._client(client) as c:
                    run_stage = {"preprocess": self.preprocess, "train": self.train,
                                 "sample": self.sample, "evaluate": self.evaluate}
                    for stage in rest:
                        logger.info("stage %s", stage)
                        options = {"overwrite": overwrite} if stage in ("train", "sample") else {}
                        results[stage] = run_stage[stage](c, resume=resume, **options)
        results["seconds"] = time.perf_counter() - t0
        return results

    @contextlib.contextmanager
    def _naming_output_errors(self) -> Iterator[None]:
        """An OS error on a path the config chose (disk full, no permission) becomes one
        :class:`OutputError` naming the path and the config key that chose it."""
        try:
            self.out.root.mkdir(parents=True, exist_ok=True)
            yield
        except OSError as exc:
            key = self._config_key_of(exc.filename)
            if key is None:
                raise
            raise OutputError(what=f"{exc.strerror or exc} while writing {exc.filename}",
                              where=key, rule="outputs go to a writable folder with free space",
                              fix=f"free space or fix the permissions there, or point {key} "
                                  "elsewhere; finished stages and chunks are kept: rerun with "
                                  "--resume") from exc

    def _config_key_of(self, filename: Any) -> str | None:
        if filename is None:
            return None
        path = Path(os.fspath(filename)).absolute()
        keys = [("output.filename", self.out.samples_path)] if self.out.filename else []
        keys.append(("output.dir", self.out.root))
        if self.config.simulate is not None:
            keys.append(("simulate.out_dir", Path(self.config.simulate.out_dir)))
        for key, root in keys:
            root = root.absolute()
            if path == root or root in path.parents:
                return f"{key} ({root})"
        return None

    @contextlib.contextmanager
    def _stop_on_sigterm(self) -> Iterator[None]:
        """SIGTERM (a batch job's walltime, ``scancel``): write :attr:`stop_path`; training
        then checkpoints and stops, any other stage stops at once. Main thread only."""
        with contextlib.suppress(FileNotFoundError):
            self.stop_path.unlink()
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def on_sigterm(signum: int, frame: Any) -> None:
            self.stop_path.write_text(f"SIGTERM received by pid {os.getpid()} at {time.ctime()}\n")
            if self._training:
                logger.warning("SIGTERM: training writes a checkpoint and stops")
                return
            raise RunInterrupted("stopped by SIGTERM; finished stages and chunks are kept; "
                                 "rerun with --resume to continue")

        previous = signal.signal(signal.SIGTERM, on_sigterm)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)
            with contextlib.suppress(FileNotFoundError):
                self.stop_path.unlink()

    @contextlib.contextmanager
    def _client(self, client: Any) -> Iterator[Any]:
        if client is not None:
            yield client
            return
        with self.config.cluster.connect() as c:
            yield c

    def simulate(self, *, resume: bool = False) -> dict[str, Any]:
        """Write the synthetic simulation sweep of the ``simulate`` section."""
        fp = self.fingerprints()["simulate"]
        sims = Path(self.config.simulate.out_dir)
        done = self.record.done("simulate", fp, sims) if resume else None
        if done:
            return {**done, "skipped": True}
        result = stages.simulate(self.config.simulate)
        self.record.record("simulate", fp, result, sims)
        return result

    def preprocess(self, client: Any, *, resume: bool = False) -> dict[str, Any]:
        """Validate the sweep and write the training store (one Dask graph on ``client``)."""
        fp = self.fingerprints()["preprocess"]
        done = self.record.done("preprocess", fp, self.out.store_path) if resume else None
        if done:
            return {**done, "skipped": True}
        result = stages.preprocess(self.config.data, self.out.store_path, client, self.progress)
        self.record.record("preprocess", fp, result, self.out.store_path)
        stages.check_split(result["split_counts"], self.config.data, self.config.evaluation,
                           self.config.training)
        return result

    def train(self, client: Any, *, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
        """Train on a worker (``GPU`` resource if asked) or data-parallel on several."""
        stages.require(self.out.store_path, "training store", "preprocess")
        fp = self.fingerprints()["train"]
        ckpt = self.out.checkpoint_path
        if resume:
            done = self.record.done("train", fp, ckpt)
            if done:
                return {**done, "skipped": True}
        replaced = self.record.replace(ckpt, "train", resume=resume, overwrite=overwrite)
        self._training = True
        try:
            result = stages.train(self.config, client, resume, self.progress, self.stop_path)
        finally:
            self._training = False
        self.record.record("train", fp, result, ckpt)
        return {**result, "replaced": str(replaced)} if replaced else result

    def sample(self, client: Any, *, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
        """Sample the sweep in chunk tasks and consolidate it into one labeled file."""
        from rho_workflow.workflow.sampling import sweep_fingerprint

        stages.require(self.out.checkpoint_path, "checkpoint", "train")
        plan = self._sweep_plan()
        fp = sweep_fingerprint(plan, file_sha256(self.out.checkpoint_path), self.out.dtype)
        if self.out.units:  # the parts are in training units; the consolidated file is not
            from rho_workflow.atomic import fingerprint

            fp = fingerprint([fp, dict(self.out.units)])
        copy = self.out.netcdf_copy_path
        if resume:
            done = self.record.done("sample", fp, self.out.samples_path)
            if done:
                made = stages.netcdf_copy(self.config, plan) if copy and not copy.is_file() else {}
                return {**done, **made, "skipped": True, "chunks_skipped": done["chunks"]}
        manifest = self.out.parts_dir / "manifest.json"
        if manifest.is_file() and not (resume or overwrite):
            raise PipelineError(what="an interrupted sweep's finished chunks are here and would "
                                     "be discarded", where=str(manifest),
                                fix="rerun with --resume to continue it, or with --overwrite to "
                                    "start the sweep over")
        replaced = self.record.replace(self.out.samples_path, "sample", resume=resume, overwrite=overwrite)
        if copy is not None:
            self.record.replace(copy, "sample", resume=resume, overwrite=overwrite)
        result = stages.sample(self.config, plan, client, resume, self.progress)
        self.record.record("sample", fp, result, self.out.samples_path)
        return {**result, "replaced": str(replaced)} if replaced else result

    def evaluate(self, client: Any, *, resume: bool = False) -> dict[str, Any]:
        """Generated vs held-out simulated fields at the held-out parameter points."""
        result = stages.evaluate(self.config, self._param_space(), client, resume, self.progress)
        self.record.record("evaluate", result.pop("fingerprint"), result)
        return result


def run_pipeline(source: str | Path | Mapping[str, Any], stages: Sequence[str] | None = None, *,
                 resume: bool = False, overwrite: bool = False,
                 cluster: Mapping[str, Any] | None = None, dry_run: bool = False,
                 client: Any = None, progress: bool = True) -> dict[str, Any]:
    """Run a pipeline (YAML path or mapping) from Python; ``dry_run`` returns the plan."""
    pipeline = Pipeline.from_source(source, cluster=cluster, progress=progress)
    if dry_run:
        return pipeline.plan()
    return pipeline.run(stages, resume=resume, overwrite=overwrite, client=client)
