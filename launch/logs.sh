#!/usr/bin/env bash
# Follows the training log of one worker of a TPU VM slice (worker 0: the progress lines).
set -euo pipefail
# shellcheck source=common.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<'EOF_USAGE'
Usage: launch/logs.sh --name=NAME --zone=ZONE [--project=PROJECT] [--worker=0] [--dry-run]

Streams ~/train.log of one worker (tail -f over ssh; Ctrl-C stops watching, not
the run). Worker 0 prints the progress lines; the others only warnings and
errors.
EOF_USAGE
}

name="" zone="" project="" worker=0
while (($# > 0)); do
  case "$1" in
    --name=*) name=${1#*=} ;;
    --zone=*) zone=${1#*=} ;;
    --project=*) project=${1#*=} ;;
    --worker=*) worker=${1#*=} ;;
    --dry-run) DRY_RUN=1 ;;
    -h | --help) usage; exit 0 ;;
    *) bad_flag "$1" ;;
  esac
  shift
done
require "$name" --name
require "$zone" --zone
[[ $worker =~ ^[0-9]+$ ]] || die "--worker must be a worker number (0, 1, ...), got '$worker'"
set_location "$zone" "$project"

run gcloud compute tpus tpu-vm ssh "$name" "${LOCATION[@]}" "--worker=$worker" \
  "--command=tail -n 200 -F ~/train.log"
