#!/usr/bin/env bash
# Starts bert_jax pre-training on every worker of a TPU VM slice, in the background.
set -euo pipefail
# shellcheck source=common.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<'EOF_USAGE'
Usage: launch/run.sh --name=NAME --zone=ZONE --config=CONFIG --workdir=gs://BUCKET/RUN
           [--project=PROJECT] [--tfds_data_dir=gs://...] [--allow_local_workdir]
           [--dry-run] [-- --config.a.b=v ...]

Runs, on every worker at once (gcloud compute tpus tpu-vm ssh --worker=all):
  cd ~/bert_jax; nohup ~/bert_jax_venv/bin/python -m bert_jax.main \
      --config=CONFIG --workdir=WORKDIR [--config.a.b=v ...] > ~/train.log 2>&1 &
in the background, so the ssh returns while training goes on. Each worker
writes its own ~/train.log (worker 0's has the progress lines: logs.sh) and
~/train.pid; SIGTERM to that pid checkpoints and stops the run:
  gcloud compute tpus tpu-vm ssh NAME --zone=ZONE --worker=all \
      --command='kill -TERM $(cat ~/train.pid)'
The same command again resumes from the workdir's latest checkpoint. A worker
where a run is still going refuses to start a second one.

  --name, --zone, --project   The slice (install.sh installed bert_jax on it).
  --config         Config file, relative to the checkout (configs/large.py).
  --workdir        gs://: every worker reads and writes it (checkpoints, logs).
  --tfds_data_dir  Sets TFDS_DATA_DIR on the workers (a gs:// path all share).
  --allow_local_workdir  Accept a workdir that is not gs://: only for a slice
                   of one worker (v5litepod-8 or smaller, v4-8, v5p-8).
  --dry-run        Print the command and run nothing.
  -- ...           More flags for bert_jax.main, e.g. --config.train.batch_size=1024.
EOF_USAGE
}

name="" zone="" project="" config="" workdir="" tfds_data_dir="" allow_local_workdir=0
extra=()
while (($# > 0)); do
  case "$1" in
    --name=*) name=${1#*=} ;;
    --zone=*) zone=${1#*=} ;;
    --project=*) project=${1#*=} ;;
    --config=*) config=${1#*=} ;;
    --workdir=*) workdir=${1#*=} ;;
    --tfds_data_dir=*) tfds_data_dir=${1#*=} ;;
    --allow_local_workdir) allow_local_workdir=1 ;;
    --dry-run) DRY_RUN=1 ;;
    -h | --help) usage; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) bad_flag "$1" ;;
  esac
  shift
done
require "$name" --name
require "$zone" --zone
require "$config" --config
require "$workdir" --workdir
if [[ $workdir != gs://* ]] && ((!allow_local_workdir)); then
  die "--workdir=$workdir is not gs://: all workers of a slice must share it (--allow_local_workdir for a one-worker slice)"
fi
set_location "$zone" "$project"

main=(-m bert_jax.main "--config=$config" "--workdir=$workdir" ${extra[@]+"${extra[@]}"})
environment=""
if [[ -n $tfds_data_dir ]]; then
  environment="TFDS_DATA_DIR=$(shell_quote "$tfds_data_dir") "
fi
# nohup's own pid is python's (nohup execs it), so ~/train.pid is the process to signal.
remote="$STOP_IF_RUNNING; cd ~/bert_jax || exit 1;"
remote+=" ${environment}nohup ~/bert_jax_venv/bin/python $(quote_command "${main[@]}") > ~/train.log 2>&1 < /dev/null &"
remote+=" echo \$! > ~/train.pid; echo \"\$(hostname): started, pid \$!, log ~/train.log\""
run gcloud compute tpus tpu-vm ssh "$name" "${LOCATION[@]}" --worker=all "--command=$remote"
if ((!DRY_RUN)); then
  note "started on every worker of $name; follow worker 0: launch/logs.sh --name=$name --zone=$zone${project:+ --project=$project}"
fi
