#!/usr/bin/env bash
# Deletes a TPU VM slice (and its queued resource). The workdir bucket is left as it is.
set -euo pipefail
# shellcheck source=common.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<'EOF_USAGE'
Usage: launch/delete_tpu.sh --name=NAME --zone=ZONE [--project=PROJECT] [--queued]
           [--yes] [--dry-run]

Deletes the TPU node NAME; with --queued (a slice create_tpu.sh --queued made)
also the queued resource NAME-qr, which otherwise keeps its place or its
capacity. A slice is billed while it exists, busy or idle; the bucket with the
checkpoints stays. Asks first, unless --yes.
EOF_USAGE
}

name="" zone="" project="" queued=0 yes=0
while (($# > 0)); do
  case "$1" in
    --name=*) name=${1#*=} ;;
    --zone=*) zone=${1#*=} ;;
    --project=*) project=${1#*=} ;;
    --queued) queued=1 ;;
    --yes) yes=1 ;;
    --dry-run) DRY_RUN=1 ;;
    -h | --help) usage; exit 0 ;;
    *) bad_flag "$1" ;;
  esac
  shift
done
require "$name" --name
require "$zone" --zone
set_location "$zone" "$project"

what="TPU node $name"
if ((queued)); then
  what+=" and queued resource $(queued_resource_name "$name")"
fi
if ((!DRY_RUN && !yes)); then
  answer=""
  read -r -p "Delete $what in $zone? [y/N] " answer || true
  case $answer in
    y | Y | yes) ;;
    *) die "not deleted (answer y, or pass --yes)" ;;
  esac
fi

# A queued resource still waiting has no node yet: go on to delete the request itself.
if ! run gcloud compute tpus tpu-vm delete "$name" "${LOCATION[@]}" --quiet; then
  ((queued)) || die "gcloud could not delete $name (its error is above)"
  note "no node deleted; deleting the queued resource"
fi
if ((queued)); then
  # --force: also whatever the request still holds.
  run gcloud compute tpus queued-resources delete "$(queued_resource_name "$name")" \
    "${LOCATION[@]}" --force --quiet
fi
