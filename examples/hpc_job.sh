#!/usr/bin/env bash
# Run a rho_workflow pipeline on a SLURM cluster: this job is the driver (Dask scheduler and
# client, a few cores); the Dask workers are further SLURM jobs submitted by dask-jobqueue,
# so only the cluster section changes between a laptop and the HPC system.
#
#   sbatch examples/hpc_job.sh pipelines/demo.yaml
#   ACCOUNT=proj42 PARTITION=gpu GPUS=1 JOBS=4 sbatch examples/hpc_job.sh pipelines/my.yaml
#
# Set GPUS=1 to give each worker job a GPU (--gres) and the Dask resource GPU=1 that the
# train and sample stages request when the pipeline says `gpu: true`. Add --resume to
# RHO_ARGS to continue a run that hit its walltime (RHO_ARGS=--overwrite replaces an earlier
# run's checkpoint and sweep instead; without either a rerun refuses to replace them).
# Two minutes before the walltime SLURM sends SIGTERM to this script, which is the driver
# (exec below): training writes a checkpoint and stops, a sweep keeps its finished chunks,
# and the resubmitted job continues from there with --resume.
#SBATCH --job-name=rho-driver
#SBATCH --time=04:00:00
#SBATCH --signal=B:TERM@120
#SBATCH --cpus-per-task=2
#SBATCH --mem=8G
#SBATCH --output=rho-driver-%j.out
set -euo pipefail

PIPELINE="${1:-pipelines/demo.yaml}"
JOBS="${JOBS:-2}"
CORES="${CORES:-8}"
MEMORY="${MEMORY:-32GiB}"
WALLTIME="${WALLTIME:-03:30:00}"
GPUS="${GPUS:-0}"
PYTHON="${PYTHON:-$(command -v python)}"

directives="[]"
resources="{}"
if [ "$GPUS" -gt 0 ]; then
    directives="[--gres=gpu:${GPUS}]"
    resources="{GPU: ${GPUS}}"
fi
optional=""
[ -n "${ACCOUNT:-}" ] && optional="${optional}, account: ${ACCOUNT}"
[ -n "${PARTITION:-}" ] && optional="${optional}, queue: ${PARTITION}"

cluster="{kind: slurm, jobs: ${JOBS}, cores: ${CORES}, processes: 1, memory: ${MEMORY},
  walltime: '${WALLTIME}', python: ${PYTHON}, job_extra_directives: ${directives},
  resources: ${resources}, log_directory: dask-logs${optional}}"

echo "driver on $(hostname); cluster: ${cluster}"
rho-workflow run "$PIPELINE" --cluster "$cluster" --dry-run | tail -n 40
exec rho-workflow run "$PIPELINE" --cluster "$cluster" ${RHO_ARGS:-}
