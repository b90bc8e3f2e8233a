#!/usr/bin/env bash
# Pre-trains on all the GPUs of one host: one process, one mesh over its GPUs.
set -euo pipefail
# shellcheck source=common.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<'EOF_USAGE'
Usage: launch/gpu_single_host.sh --config=CONFIG --workdir=DIR [--gpus=N] [--dry-run]
           [-- --config.a.b=v ...]

Runs, in the foreground, one process that sees the host's GPUs (all, or the
first N with --gpus=N, through CUDA_VISIBLE_DEVICES):
  python -m bert_jax.main --config=CONFIG --workdir=DIR \
      --config.mesh.data=-1 --config.model.dtype=bfloat16 [--config.a.b=v ...]
a data-parallel mesh over those GPUs with bf16 compute (flags after -- come last
and win, e.g. --config.mesh.data=1 --config.mesh.fsdp=-1 for FSDP). Run it
again with the same workdir to resume. Needs jax with CUDA
(pip install 'jax[cuda12]==0.12.0.1').

Several GPU hosts: run bert_jax.main on every host with the same workdir (shared
by all) and --coordinator_address=HOST0:PORT --num_processes=N --process_id=I
(README, "Multi-host"); SLURM (srun) and Open MPI (mpirun) jobs need none of
the three.
EOF_USAGE
}

config="" workdir="" gpus=""
extra=()
while (($# > 0)); do
  case "$1" in
    --config=*) config=${1#*=} ;;
    --workdir=*) workdir=${1#*=} ;;
    --gpus=*) gpus=${1#*=} ;;
    --dry-run) DRY_RUN=1 ;;
    -h | --help) usage; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) bad_flag "$1" ;;
  esac
  shift
done
require "$config" --config
require "$workdir" --workdir

command=()
if [[ -n $gpus ]]; then
  [[ $gpus =~ ^[1-9][0-9]*$ ]] || die "--gpus must be a number of GPUs (1, 2, ...), got '$gpus'"
  devices=0
  for ((gpu = 1; gpu < gpus; gpu++)); do
    devices+=",$gpu"
  done
  command=(env "CUDA_VISIBLE_DEVICES=$devices")
fi
command+=(python -m bert_jax.main "--config=$config" "--workdir=$workdir"
          --config.mesh.data=-1 --config.model.dtype=bfloat16 ${extra[@]+"${extra[@]}"})
if ((DRY_RUN)); then
  quote_command "${command[@]}"
  exit 0
fi
echo "+ $(quote_command "${command[@]}")" >&2
exec "${command[@]}"
