"""``rho-workflow``: run a pipeline, one of its stages, or write a synthetic sweep.

    rho-workflow run PIPELINE.yaml [--dry-run] [--resume | --overwrite] [--cluster SPEC]
    rho-workflow preprocess|train|sample|evaluate PIPELINE.yaml [--resume | --overwrite] [--cluster SPEC]
    rho-workflow infer PIPELINE.yaml --observed FIELD.nc [--method grid|mcmc] [--prior YAML]
    rho-workflow make-data KIND OUT_DIR --runs N --seed S
    rho-workflow schema            # JSON Schema of the pipeline file, for editors

``--cluster`` replaces the pipeline's cluster section: a kind name (``local``, ``slurm``, ...),
a YAML file holding a cluster section, or inline YAML (``"{kind: local, n_workers: 4}"``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any, Sequence

import yaml

__all__ = ["main", "build_parser"]

STAGE_COMMANDS = ("preprocess", "train", "sample", "evaluate")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rho-workflow", description="Run a rho-Diffusion pipeline (or one of its stages) on "
        "a Dask cluster, or write a synthetic simulation sweep.")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error instead of its one-line message")
    sub = parser.add_subparsers(dest="command", required=True)
    commands = {"run": "run all stages of a pipeline in order"}
    commands.update({s: f"run only the {s} stage of a pipeline" for s in STAGE_COMMANDS})
    for name, help_text in commands.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("pipeline", help="pipeline YAML file (see pipelines/)")
        p.add_argument("--dry-run", action="store_true",
                       help="print the resolved config and the plan (tasks, chunks, resources); "
                            "run nothing")
        again = p.add_mutually_exclusive_group()
        again.add_argument("--resume", action="store_true",
                           help="continue an interrupted run: skip finished stages and chunks, "
                                "resume training from its checkpoint")
        again.add_argument("--overwrite", action="store_true",
                           help="replace an existing checkpoint or sweep (the earlier one is "
                                "kept as output.dir/previous/<name>)")
        p.add_argument("--cluster", metavar="SPEC",
                       help="override the cluster section: a kind name, a YAML file or inline YAML")
    inf = sub.add_parser("infer", help="infer the physical parameters of an observed field",
                         description="posterior of the parameters that produced the field(s) of a netCDF file, "
                                     "under the pipeline's trained model; writes <output.dir>/inference/")
    inf.add_argument("pipeline", help="pipeline YAML file whose train stage has run")
    inf.add_argument("--observed", required=True, metavar="FILE.nc",
                     help="netCDF file with the model's field variable on its grid (one field, or several "
                          "along one more dim)")
    inf.add_argument("--variable", help="the field variable (default: the model's field)")
    inf.add_argument("--method", choices=["grid", "mcmc"], default="grid",
                     help="grid (up to 3 continuous parameters) or mcmc (emcee)")
    inf.add_argument("--likelihood", choices=["bound", "ode"], default="bound",
                     help="bound: Monte-Carlo bound K (fast); ode: exact probability-flow density")
    inf.add_argument("--prior", metavar="YAML",
                     help="per-parameter prior as inline YAML, e.g. \"{index: [-2.5, -1.5], amplitude: 1.0}\" "
                          "(a range is uniform, a number fixes the parameter; default: the trained ranges)")
    inf.add_argument("--no-figures", action="store_true", help="no corner plot")
    from rho_workflow.data.make_data import add_arguments

    make = sub.add_parser("make-data", help="write a synthetic simulation sweep as netCDF")
    add_arguments(make)
    sub.add_parser("schema", help="print the JSON Schema of the pipeline file (for editors that "
                   "validate YAML as you type)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rho-workflow`` command; returns the exit status.

    Any error of the package (:class:`~rho_workflow.errors.RhoWorkflowError`) and any OS error
    on a named file is printed as one message and gives exit status 2; ``--debug`` re-raises
    it with its traceback instead. A run stopped by SIGTERM exits with 143 (128 + 15).
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("pint").setLevel(logging.ERROR)  # cf-xarray's registry redefines units
    from rho_workflow.errors import RhoWorkflowError, RunInterrupted

    try:
        return _dispatch(args)
    except RunInterrupted as exc:
        if args.debug:
            raise
        print(f"rho-workflow: interrupted: {exc}", file=sys.stderr)
        return 128 + 15
    except (RhoWorkflowError, OSError) as exc:
        if args.debug:
            raise
        print(f"rho-workflow: error: {_one_message(exc)}", file=sys.stderr)
        return 2


def _one_message(exc: BaseException) -> str:
    """The error as its user should read it; an OS error names its file and the reason."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc)


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "make-data":
        from rho_workflow.data.make_data import run

        return run(args)
    if args.command == "schema":
        from rho_workflow.config import PipelineConfig

        print(json.dumps(PipelineConfig.json_schema(), indent=2))
        return 0
    if args.command == "infer":
        return _infer(args)
    from rho_workflow.pipeline import Pipeline
    from rho_workflow.workflow.cluster import parse_cluster_override

    import distributed  # noqa: F401  (configures its loggers on import; quieten them after)

    logging.getLogger("distributed").setLevel(logging.WARNING)
    logging.getLogger("distributed.client").addFilter(_drop_connection_tracebacks)
    cluster = parse_cluster_override(args.cluster) if args.cluster else None
    pipeline = Pipeline.from_source(args.pipeline, cluster=cluster, progress=not args.quiet)
    if args.dry_run:
        print(format_plan(pipeline.plan(), None if args.command == "run" else [args.command]))
        return 0
    stages = None if args.command == "run" else [args.command]
    results = pipeline.run(stages, resume=args.resume, overwrite=args.overwrite)
    print(format_summary(pipeline, results))
    return 0


def _infer(args: argparse.Namespace) -> int:
    from rho_workflow.config import load_pipeline
    from rho_workflow.errors import ConfigError
    from rho_workflow.workflow.inference import infer_observed

    prior = None
    if args.prior:
        from rho_workflow.yamlio import load_yaml

        prior = load_yaml(args.prior, "--prior")  # a key given twice is an error too
        if not isinstance(prior, dict):
            raise ConfigError([f"--prior: must be a mapping of parameter names to priors, got {prior!r}"],
                              what="--prior")
    config = load_pipeline(args.pipeline)
    result = infer_observed(config, args.observed, method=args.method, likelihood=args.likelihood, prior=prior,
                            variable=args.variable, figures=not args.no_figures)
    lines = [f"infer: {result['fields']} field(s) from {args.observed} ({result['method']}, "
             f"likelihood {result['likelihood']})"]
    for i, summary in enumerate(result["summaries"]):
        for name, s in summary.items():
            if "mean" in s:
                lines.append(f"  field {i}: {name} = {s['mean']:.4g} +- {s['sd']:.2g} {s['units']} "
                             f"(68%: {s['ci68'][0]:.4g} .. {s['ci68'][1]:.4g}; 95%: {s['ci95'][0]:.4g} .. "
                             f"{s['ci95'][1]:.4g})")
            elif "probabilities" in s:
                lines.append(f"  field {i}: {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in s["probabilities"].items()))
    lines += [f"  wrote {p}" for p in result["outputs"]]
    print("\n".join(lines))
    return 0


def _drop_connection_tracebacks(record: logging.LogRecord) -> bool:
    """The client's tracebacks of a lost scheduler connection: the run's own error says it
    in one message (``SchedulerLost``)."""
    exc = record.exc_info[1] if record.exc_info else None
    return not (exc is not None and type(exc).__name__ in ("CommClosedError", "CancelledError",
                                                           "ConnectionRefusedError", "OSError",
                                                           "StreamClosedError"))


def format_plan(plan: dict[str, Any], stages: list[str] | None = None) -> str:
    """The ``--dry-run`` text: resolved config (YAML), cluster, then each stage's plan."""
    lines = ["# resolved config", yaml.safe_dump(plan["config"], sort_keys=False).rstrip(), "",
             "# plan", f"cluster: {plan['cluster']['description']}"]
    if "job_script" in plan["cluster"]:
        lines += ["job script:", *("    " + line for line in plan["cluster"]["job_script"].splitlines())]
    for name, stage in plan["stages"].items():
        if stages and name not in stages:
            continue
        lines.append(f"stage {name}:")
        for key, value in stage.items():
            text = value if isinstance(value, str) else json.dumps(value)
            lines += [f"  {key}: {line}" if i == 0 else f"    {line}"
                      for i, line in enumerate(str(text).splitlines())]
    return "\n".join(lines)


def format_summary(pipeline: Any, results: dict[str, Any]) -> str:
    """What ran, the headline numbers and the paths of the outputs."""
    out = pipeline.config.output
    lines = [f"pipeline {pipeline.config.name}: finished in {results.get('seconds', 0):.1f} s"]
    if "simulate" in results:
        r = results["simulate"]
        lines.append(f"  simulate   : {r['files']} files in {r['out_dir']}")
    if "preprocess" in results:
        r = results["preprocess"]
        lines.append(f"  preprocess : {r['n_samples']} fields {r['split_counts']} -> {r['store']}")
    if "train" in results:
        r = results["train"]
        loss = r.get("final_loss")
        lines.append(f"  train      : step {r['step']}, final loss "
                     f"{'n/a' if loss is None else f'{loss:.4f}'} -> {r['checkpoint']}")
    if "sample" in results:
        r = results["sample"]
        lines.append(f"  sample     : {r['n_samples']} fields in {r['chunks']} chunks "
                     f"({r['chunks_skipped']} resumed), {r['samples_per_second']:.1f} samples/s "
                     f"-> {r['output']}")
        if r.get("netcdf_copy"):
            lines.append(f"               netCDF copy -> {r['netcdf_copy']}")
    for stage in ("train", "sample"):
        if results.get(stage, {}).get("replaced"):
            lines.append(f"  {stage:<11}: replaced the earlier one, kept as {results[stage]['replaced']}")
    if "evaluate" in results:
        r = results["evaluate"]
        split = pipeline.config.evaluation.split.replace("_", "-")
        seen = r.get("training_points", 0) if split != "train" else 0
        extra = f" + {seen} training" if seen else ""
        lines.append(f"  evaluate   : {r['points'] - seen} {split}{extra} points, "
                     f"{r.get('members', '?')} members each, {r['figures']} figures -> {r['summary']}")
        if r.get("report"):
            lines.append(f"               report (open in a browser): {r['report']}")
        for var, scores in r["headline"].items():
            text = ", ".join(f"{k} {v:.3g}" for k, v in scores.items() if v == v)  # NaN: not applicable (e.g. no bounds)
            lines.append(f"               {var}: median {text}")
        for var, scores in (r.get("over_floor") or {}).items():
            for name, s in scores.items():
                ratio = f" = {s['ratio']:.2g}x" if s.get("ratio") is not None else ""
                lines.append(f"               {var}: {split} {name.replace('_', ' ')} {s['value']:.3g}{ratio} "
                             f"its noise floor {s['floor']:.3g} (median of {s['points']} points; "
                             "floor: simulations against simulations)")
        if r.get("log_likelihood") is not None:
            lines.append(f"               held-out log-likelihood: median "
                         f"{r['log_likelihood']:.4g} bits/dim")
    lines.append(f"  outputs in {out.root}/ (run record: {out.root / 'run.json'})")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
