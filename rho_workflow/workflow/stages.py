"""The stages of a pipeline as functions: simulate, preprocess, train, sample, evaluate.

Each takes the validated sections it needs and a Dask client and returns a small JSON-able
result; :mod:`rho_workflow.pipeline` keeps only their order, the run record, resume and
progress. The training stage ships a :class:`~rho_workflow.workflow.tasks.TrainingSpec` to
one worker (resubmitted from its last checkpoint on failure) or to a data-parallel group.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import uuid
from pathlib import Path
from typing import Any, Iterator, Mapping

from rho_workflow.atomic import file_sha256
from rho_workflow.errors import RhoWorkflowError, RunInterrupted
from rho_workflow.workflow.retry import AttemptFailed, with_retries
from rho_workflow.workflow.tasks import TrainingSpec

__all__ = ["StageError", "simulate", "preprocess", "train", "sample", "netcdf_copy", "sweep_attrs",
           "evaluate", "training_spec",
           "plan_data", "check_split", "check_network"]

logger = logging.getLogger("rho_workflow")


class StageError(RhoWorkflowError, RuntimeError):
    """A stage cannot run (a missing input, a failed task); the message says what to do."""


def require(path: Path, what: str, stage: str) -> None:
    """Stop with the fix when an earlier stage's artefact is missing."""
    if not path.exists():
        raise StageError(f"no {what} at {path}: run the {stage} stage first")


def simulate(section: Any) -> dict[str, Any]:
    """Write the synthetic simulation sweep of the ``simulate`` section."""
    from rho_workflow.data.make_data import default_realizations, write_sweep

    realizations = section.realizations or default_realizations(section.kind, 4)
    paths = write_sweep(section.kind, section.out_dir, runs=section.runs, seed=section.seed,
                        size=section.size, realizations=realizations)
    return {"files": len(paths), "out_dir": section.out_dir}


def plan_data(data: Any) -> tuple[dict[str, Any], Any]:
    """The ``--dry-run`` view of the data section: files, samples and split sizes (from the
    files' metadata, nothing read), and the parameter space the store will record."""
    from rho_workflow.data.ingest import plan_ingest
    from rho_workflow.data.store import SPLITS, assign_split, build_param_space

    plan = plan_ingest(data)
    split = assign_split(plan.points, plan.sample_files, data.split.validation,
                         data.split.held_out, data.split.seed, data.split.by)
    counts = {name: int((split == i).sum()) for i, name in enumerate(SPLITS)}
    by = data.split.by if isinstance(data.split.by, str) else list(data.split.by)
    return ({"files": len(plan.files), "samples": plan.n_samples, "split": counts,
             "split_by": by, "field_shape": [len(data.variables), *plan.grid.shape]},
            build_param_space(plan))


def check_network(model: Any, param_space: Any, field_shape: tuple[int, ...], source: str | None = None) -> str:
    """Build the model section's network for fields of ``field_shape`` ``(C, *spatial)`` and
    run one forward pass on zeros, so that a bad ``model.network`` entry (an unknown key, an
    impossible value, a grid the network cannot take) stops the run before any stage does,
    as one :class:`ConfigError` naming the key. Returns a one-line description."""
    import torch

    from rho_workflow.errors import ConfigError
    from rho_workflow.training.model import TrainedModel

    channels, spatial = int(field_shape[0]), tuple(int(n) for n in field_shape[1:])
    try:
        built = TrainedModel.create(spatial, param_space, channels=channels, encoder=model.encoder,
                                    prediction=model.prediction, schedule=model.schedule, T=model.T,
                                    network=model.network, p_uncond=model.p_uncond, device="cpu")
        net = built.denoiser.net.eval()
        with torch.no_grad():
            net(torch.zeros(1, channels, *spatial), torch.zeros(1), None)
    except (ValueError, TypeError) as exc:
        given = "the default network" if model.network is None else f"{model.network}"
        raise ConfigError([f"model.network ({given}) cannot be built for fields of shape "
                           f"{(channels, *spatial)}: {exc}"], source=source) from exc
    kind = built.config["network"].get("kind", "unet")
    return f"{kind}, {built.n_parameters / 1e6:.2f}M parameters, checked on fields of shape {(channels, *spatial)}"


def check_split(counts: Mapping[str, int], data: Any, evaluation: Any, training: Any = None) -> None:
    """Stop before training when the evaluation, or model selection by the validation loss
    (``training.validate_every``), needs a split that would be empty."""
    from rho_workflow.errors import ConfigError

    if training is not None and training.validate_every and counts.get("validation", 0) == 0:
        raise ConfigError([
            f"training.validate_every: {training.validate_every} computes the loss on the "
            f"validation runs, but the validation split would hold 0 of the {sum(counts.values())} "
            f"samples (data.split.validation={data.split.validation}; sizes {dict(counts)}); fix: "
            "raise data.split.validation (a run or more), or set training.validate_every: 0 "
            "(and keep: last, patience: 0)"])
    if not evaluation.enabled or counts.get(evaluation.split, 0) > 0:
        return
    n = sum(counts.values())
    fraction = {"held_out": data.split.held_out, "validation": data.split.validation}.get(
        evaluation.split)
    by = data.split.by if isinstance(data.split.by, str) else list(data.split.by)
    raise ConfigError([
        f"evaluation.split: the {evaluation.split!r} split would hold 0 of the {n} samples "
        f"(data.split.{evaluation.split}={fraction} of the runs, a run being "
        f"{'a file' if by == 'file' else 'a parameter point' if by == 'params' else by}; "
        f"sizes {dict(counts)}) and the evaluation compares against it (rule: evaluation "
        "needs reference runs the model did not train on); fix: split by parameter point "
        "(data.split.by: params) when files are few, raise data.split."
        f"{evaluation.split}, choose another evaluation.split, or set evaluation.enabled: "
        "false"])


def preprocess(data: Any, store_path: Path, client: Any, progress: bool) -> dict[str, Any]:
    """Validate the sweep and write the training store (one Dask graph on ``client``)."""
    from rho_workflow.data.store import preprocess as write_store

    info = write_store(data, store_path, client=client, progress=progress)
    return {"store": str(info.path), "n_samples": info.n_samples,
            "split_counts": info.split_counts, "seconds": info.seconds,
            "throughput_mb_s": info.throughput_mb_s}


def training_spec(config: Any, resume: bool, topic: str | None,
                  stop_file: Path | None = None) -> TrainingSpec:
    """The plain-data training task of a validated pipeline."""
    out, resolved = config.output, config.to_dict()
    ckpt = out.checkpoint_path
    return TrainingSpec(data={"kind": "store", "path": str(out.store_path.resolve()), "split": "train",
                              "validation": bool(config.training.validate_every)},
                        model=resolved["model"], train=config.training.train_config.to_dict(),
                        metadata={"pipeline": resolved}, checkpoint=str(ckpt.resolve()),
                        resume=resume and ckpt.is_file(), threads=config.training.threads,
                        progress_topic=topic,
                        stop_file=None if stop_file is None else str(Path(stop_file).resolve()))


def train(config: Any, client: Any, resume: bool, progress: bool,
          stop_file: Path | None = None) -> dict[str, Any]:
    """Train on a worker (``GPU`` resource if asked) or data-parallel on several; when
    ``stop_file`` appears, a single-worker training checkpoints and stops
    (:class:`~rho_workflow.errors.RunInterrupted`)."""
    from rho_workflow.workflow.ddp import train_data_parallel

    require(config.output.store_path, "training store", "preprocess")
    t = config.training
    topic = f"rho-train-{uuid.uuid4().hex[:8]}"
    spec = training_spec(config, resume, topic, stop_file)
    with _train_progress(client, topic, t.train_config.steps, progress):
        if t.workers > 1:
            result = train_data_parallel(client, spec, t.workers, gpu=t.gpu, backend=t.backend,
                                         timeout_s=t.timeout_s, max_attempts=t.max_attempts)
        else:
            result = _train_one(client, spec, gpu=t.gpu, max_attempts=t.max_attempts)
    return {"checkpoint": result["checkpoint"], "checkpoint_sha256": result["checkpoint_sha256"],
            "step": result["step"], "final_loss": (result["losses"] or [None])[-1],
            "steps_per_second": (len(result["losses"]) / result["train_seconds"]
                                 if result.get("train_seconds") else None),
            "seconds": result["seconds"], "attempts": result.get("attempts", 1),
            **({"validation": _validation_summary(result["validation"], t.train_config.keep)}
               if result.get("validation") else {})}


def _validation_summary(record: Mapping[str, Any], keep: str) -> dict[str, Any]:
    """The train stage's account of model selection (the full history is in the checkpoint)."""
    history = record.get("history") or []
    return {"evaluations": len(history), "best_step": record.get("best_step"),
            "best_loss": record.get("best_loss"), "last_loss": history[-1][1] if history else None,
            "stopped_at": record.get("stopped_at"),
            "kept": "the EMA weights of best_step" if keep == "best" else "the EMA weights of the last step"}


def _train_one(client: Any, spec: TrainingSpec, *, gpu: bool, max_attempts: int) -> dict[str, Any]:
    from rho_workflow.workflow.tasks import train_model

    def attempt(k: int) -> dict[str, Any]:
        this = dataclasses.replace(spec, resume=spec.resume or (k > 0 and Path(spec.checkpoint).is_file()))
        future = client.submit(train_model, this, resources={"GPU": 1} if gpu else None,
                               pure=False, key=f"train-{uuid.uuid4().hex[:10]}")
        try:
            result = future.result()
        except Exception as exc:  # a worker lost or a failed step: resume from checkpoint
            raise AttemptFailed(f"{type(exc).__name__}: {exc}") from exc
        if result.get("interrupted"):  # asked to stop (SIGTERM): not a failure to retry
            raise RunInterrupted(f"training stopped by SIGTERM at step {result['step']}; its "
                                 f"checkpoint {result['checkpoint']} holds that step; rerun "
                                 "with --resume to continue", step=result["step"])
        return {**result, "attempts": k + 1}

    return with_retries(attempt, max_attempts, "training", StageError)


@contextlib.contextmanager
def _train_progress(client: Any, topic: str, total: int, progress: bool) -> Iterator[None]:
    """A client-side progress bar fed by the training task's log events."""
    if not progress:
        yield
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="train", unit="step", mininterval=1.0)

    def handler(event: Any) -> None:
        msg = event[1] if isinstance(event, tuple) else event
        if isinstance(msg, Mapping) and msg.get("kind") == "train":
            bar.n = int(msg["step"])
            bar.set_postfix(loss=f"{msg['loss']:.4f}", refresh=False)
            bar.refresh()

    client.subscribe_topic(topic, handler)
    try:
        yield
    finally:
        client.unsubscribe_topic(topic)
        bar.close()


def sample(config: Any, plan: Any, client: Any, resume: bool, progress: bool) -> dict[str, Any]:
    """Sample the sweep ``plan`` in chunk tasks into one labeled file (netCDF: parts
    consolidated here; zarr: regions written by the tasks, and its netCDF copy if asked)."""
    from rho_workflow.workflow.sampling import run_sweep

    s, o = config.sampling, config.output
    attrs = sweep_attrs(config, plan)
    return run_sweep(plan, o.checkpoint_path, o.samples_path, o.parts_dir, client=client,
                     resume=resume, fmt=o.format, complevel=o.complevel, dtype=o.dtype, gpu=s.gpu,
                     threads=s.threads, retries=s.retries, attrs=attrs, keep_parts=o.keep_parts,
                     progress=progress, units=dict(o.units), netcdf_copy=o.netcdf_copy_path)


def sweep_attrs(config: Any, plan: Any) -> dict[str, Any]:
    """The global attributes of the sweep's output: provenance, and the observations it is
    conditioned on."""
    from rho_workflow.workflow.output import provenance_attrs

    o = config.output
    attrs = provenance_attrs(plan, checkpoint_sha256=file_sha256(o.checkpoint_path),
                             config=config.to_dict(), title=o.title, institution=o.institution,
                             command=f"rho-workflow sample {config.source or config.name}")
    if plan.conditioning is not None:
        attrs.update(conditioning_attrs(o.checkpoint_path, plan.conditioning))
    return attrs


def netcdf_copy(config: Any, plan: Any) -> dict[str, Any]:
    """``output.netcdf_copy`` of a finished zarr sweep, made again (it was deleted, or asked
    for after the sweep ran): one serial read of the store."""
    import time

    from rho_workflow.workflow import regions
    from rho_workflow.workflow.sampling import checkpoint_labels

    o = config.output
    metadata, _ = checkpoint_labels(o.checkpoint_path)
    store = regions.open_finished_store(o.samples_path, plan, metadata, dtype=o.dtype,
                                        units=dict(o.units))
    t0 = time.perf_counter()
    regions.netcdf_copy(store, o.netcdf_copy_path, plan, metadata, attrs=sweep_attrs(config, plan),
                        complevel=o.complevel, units=dict(o.units))
    return {"netcdf_copy": str(o.netcdf_copy_path), "netcdf_copy_seconds": time.perf_counter() - t0}


def conditioning_attrs(checkpoint: Any, conditioning: Mapping[str, Any]) -> dict[str, Any]:
    """Check the observations against the trained model on the driver (one clear error before
    any task), and describe them for the output's global attributes."""
    from rho_workflow.training.model import TrainedModel
    from rho_workflow.training.observe import prepare_observations

    model = TrainedModel.load(checkpoint, device="cpu")
    lin, _ = prepare_observations(model, {"path": conditioning["observations"],
                                          "variable": conditioning["variable"]})
    rows = lin.info.get("rows", {})
    return {"conditioning": (f"each field drawn from the model conditioned on the observations in "
                             f"{Path(conditioning['observations']).name} ({', '.join(f'{v} {k} rows' for k, v in rows.items())}); "
                             "Tweedie moment projection of E[x0 | x_t, y], exact for Gaussian data "
                             "(rho_workflow.diffusion.posterior)"),
            "conditioning_file_sha256": conditioning["sha256"],
            "conditioning_cg_iters": int(conditioning["cg_iters"])}


def evaluate(config: Any, param_space: Any, client: Any, resume: bool,
             progress: bool) -> dict[str, Any]:
    """Generated vs held-out simulated fields at the held-out parameter points, with the
    model's held-out log-likelihood; returns the result and the sweep's fingerprint."""
    from rho_workflow.data.store import open_store
    from rho_workflow.workflow.evaluation import (evaluate_sweep, evaluation_members,
                                                  evaluation_plan, held_out_log_likelihood,
                                                  reference_points)
    from rho_workflow.workflow.output import provenance_attrs
    from rho_workflow.workflow.sampling import run_sweep

    o, e, s = config.output, config.evaluation, config.sampling
    require(o.checkpoint_path, "checkpoint", "train")
    with open_store(o.store_path) as store:
        refs = reference_points(store, e.split, e.max_points)
        seen = [e.split == "train"] * len(refs)
        if e.training_points and e.split != "train":
            extra = reference_points(store, "train", e.training_points)
            refs, seen = refs + extra, seen + [True] * len(extra)
    members, members_note = evaluation_members(refs, e.members)
    plan = evaluation_plan(refs, s, param_space, members)
    out_dir = o.evaluation_dir
    sha = file_sha256(o.checkpoint_path)
    attrs = provenance_attrs(plan, checkpoint_sha256=sha,
                             config=config.to_dict(), title=f"{config.name}: generated fields at "
                             f"the {e.split} parameter points", institution=o.institution,
                             command="rho-workflow evaluate")
    sweep = run_sweep(plan, o.checkpoint_path, out_dir / "samples.nc", out_dir / "parts",
                      client=client, resume=resume, complevel=o.complevel, gpu=s.gpu,
                      threads=s.threads, retries=s.retries, attrs=attrs, progress=progress)
    variants, descriptions, fingerprints = {}, {}, [sweep["fingerprint"]]
    descriptions["model"] = (f"the model ({config.model.encoder} encoder), {s.sampler} with "
                             f"{s.steps} steps")
    for kind in e.compare:
        label, path, fingerprint, description = _comparison_sweep(
            kind, config, param_space, refs, members, client, resume, progress)
        variants[label], descriptions[label] = path, description
        fingerprints.append(fingerprint)
    likelihood = None
    if e.log_likelihood != "none":
        likelihood = held_out_log_likelihood(client, o.checkpoint_path, o.store_path, refs,
                                             checkpoint_sha256=sha, method=e.log_likelihood, max_fields=e.likelihood_fields,
                                             threads=s.threads, gpu=s.gpu)
    summary = evaluate_sweep(out_dir / "samples.nc", o.store_path, refs, out_dir, bins=e.bins,
                             figures=e.figures, log_likelihood=likelihood, split=e.split,
                             title=f"{config.name}: evaluation", members_note=members_note,
                             splits=[e.split if not was_seen or e.split == "train" else "train"
                                     for was_seen in seen],
                             variants=variants, variant_descriptions=descriptions,
                             deterministic=e.simulations == "deterministic")
    return {"summary": str(out_dir / "summary.json"), "samples": sweep["output"],
            "points": len(refs), "headline": summary["headline"], "over_floor": summary["over_floor"],
            "figures": len(summary["figures"]),
            "log_likelihood": (summary.get("log_likelihood") or {}).get("median_bits_per_dim"),
            "report": summary["report"], "members": members, "training_points": sum(seen),
            "comparisons": list(variants),
            "fingerprint": (fingerprints[0] if len(fingerprints) == 1 else
                            hashlib.sha256("+".join(fingerprints).encode()).hexdigest())}


def _comparison_sweep(kind: str, config: Any, param_space: Any, refs: list, members: int,
                      client: Any, resume: bool, progress: bool) -> tuple[str, Path, str, str]:
    """One ``evaluation.compare`` variant sampled at the evaluated points: ``ddpm`` (the
    model, ``reference_steps`` ancestral steps) or ``hash_encoder`` (a twin trained with the
    SHA-512 hash encoder, checkpoint ``evaluation/model_hash.ckpt``); returns its label, sweep
    file, fingerprint and description."""
    from rho_workflow.workflow.evaluation import evaluation_plan
    from rho_workflow.workflow.output import provenance_attrs
    from rho_workflow.workflow.sampling import run_sweep

    o, e, s = config.output, config.evaluation, config.sampling
    out_dir = o.evaluation_dir
    if kind == "ddpm":
        label, checkpoint = f"ddpm-{e.reference_steps}", o.checkpoint_path
        plan = evaluation_plan(refs, s, param_space, members, sampler="ddpm", steps=e.reference_steps)
        description = (f"the same model, {e.reference_steps}-step ancestral DDPM "
                       "(the reference the fast sampler is measured against)")
    else:
        label, checkpoint = "hash-encoder", out_dir / "model_hash.ckpt"
        _train_twin(config, client, resume, progress, checkpoint, encoder="hash")
        plan = evaluation_plan(refs, s, param_space, members)
        description = (f"a twin trained with the rho-Diffusion SHA-512 hash encoder (same network, "
                       f"data and training), {s.sampler} with {s.steps} steps")
    stem = label.split("-")[0]
    attrs = provenance_attrs(plan, checkpoint_sha256=file_sha256(checkpoint), config=config.to_dict(),
                             title=f"{config.name}: {description}", institution=o.institution,
                             command="rho-workflow evaluate")
    sweep = run_sweep(plan, checkpoint, out_dir / f"samples_{stem}.nc", out_dir / f"parts_{stem}",
                      client=client, resume=resume, complevel=o.complevel, gpu=s.gpu,
                      threads=s.threads, retries=s.retries, attrs=attrs, progress=progress)
    return label, Path(sweep["output"]), sweep["fingerprint"], description


def _train_twin(config: Any, client: Any, resume: bool, progress: bool, checkpoint: Path, *,
                encoder: str) -> None:
    """Train the pipeline's model again with another encoder into ``checkpoint`` (resumed
    from it with ``resume``), on the same store and training section."""
    t = config.training
    topic = f"rho-train-{uuid.uuid4().hex[:8]}"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    spec = training_spec(config, resume and checkpoint.is_file(), topic)
    spec = dataclasses.replace(spec, model={**spec.model, "encoder": encoder},
                               checkpoint=str(checkpoint.resolve()),
                               metadata={**spec.metadata, "comparison": f"{encoder} encoder twin"})
    if resume and checkpoint.is_file():
        from rho_workflow.training.model import TrainedModel

        done = TrainedModel.load(checkpoint, device="cpu")
        if getattr(done, "step", None) == t.train_config.steps:
            return
    with _train_progress(client, topic, t.train_config.steps, progress):
        _train_one(client, spec, gpu=t.gpu, max_attempts=t.max_attempts)
