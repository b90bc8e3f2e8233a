#!/usr/bin/env bash
# Creates a Cloud TPU VM slice, after checking on this machine that the config fits its chips.
set -euo pipefail
# shellcheck source=common.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<'EOF'
Usage: launch/create_tpu.sh --name=NAME --zone=ZONE --accelerator=TYPE --config=CONFIG
           [--version=RUNTIME] [--project=PROJECT] [--queued] [--spot]
           [--config_override=--config.a.b=v ...] [--skip_aot_check] [--dry-run]
           [-- --config.a.b=v ...]

First compiles CONFIG's train step for the slice on this machine, with no TPU
(python -m bert_jax.tpu.aot; needs libtpu: pip install -e '.[tpu]'), and refuses to
create the slice when it does not fit the chips' HBM. Then creates it:

  plain:     gcloud compute tpus tpu-vm create NAME ...
  --queued:  gcloud compute tpus queued-resources create NAME-qr --node-id=NAME ...
             and waits until the queued resource is ACTIVE (delete_tpu.sh --queued
             deletes both).

  --name             TPU node name.
  --zone             A zone that has the accelerator (gcloud compute tpus
                     accelerator-types list --zone=ZONE).
  --accelerator      Cloud TPU accelerator type: v5litepod-256, v4-128, v5p-64, v6e-16...
  --config           Config file, as for bert_jax.main (configs/large.py).
  --config_override  One --config.a.b=v for the AOT check; repeat it, or put the
                     overrides after --. Give run.sh the same ones.
  --version          TPU runtime; default by generation (see RUNTIMES in this script).
  --project          Google Cloud project; default: gcloud's configured one.
  --queued           Through a queued resource (waits for capacity instead of failing).
  --spot             Spot capacity: cheaper, preemptible at any time.
  --skip_aot_check   Create without compiling first (--config is then not needed).
  --dry-run          Print the commands, one a line, and run none of them, except
                     the AOT check, which is local and free (skip it with
                     --skip_aot_check).
EOF
}

# RUNTIMES: the default TPU VM runtime (software version) per TPU generation. These are Cloud
# TPU's runtime names as of writing; check them against
# `gcloud compute tpus tpu-vm versions list --zone=ZONE` and pass --version to override.
default_runtime() {
  case "$1" in
    v5litepod-*) echo v2-alpha-tpuv5-lite ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v6e-*) echo v2-alpha-tpuv6e ;;
    v4-*) echo tpu-ubuntu2204-base ;;
    *) return 1 ;;
  esac
}

# How often to ask whether a queued resource is ACTIVE, in seconds.
POLL_SECONDS=30

name="" zone="" accelerator="" config="" version="" project=""
queued=0 spot=0 skip_aot_check=0
overrides=()
while (($# > 0)); do
  case "$1" in
    --name=*) name=${1#*=} ;;
    --zone=*) zone=${1#*=} ;;
    --accelerator=*) accelerator=${1#*=} ;;
    --config=*) config=${1#*=} ;;
    --config_override=*) overrides+=("${1#*=}") ;;
    --version=*) version=${1#*=} ;;
    --project=*) project=${1#*=} ;;
    --queued) queued=1 ;;
    --spot) spot=1 ;;
    --skip_aot_check) skip_aot_check=1 ;;
    --dry-run) DRY_RUN=1 ;;
    -h | --help) usage; exit 0 ;;
    --) shift; overrides+=("$@"); break ;;
    *) bad_flag "$1" ;;
  esac
  shift
done
require "$name" --name
require "$zone" --zone
require "$accelerator" --accelerator
if ((!skip_aot_check)); then
  require "$config" --config
fi
if [[ -z $version ]]; then
  version=$(default_runtime "$accelerator") ||
    die "no default runtime for accelerator '$accelerator'; give --version=RUNTIME"
fi
set_location "$zone" "$project"

# ---- Does the config fit the slice? ----
if ((!skip_aot_check)); then
  aot=(python -m bert_jax.tpu.aot "--config=$config" "--topology=$accelerator"
       ${overrides[@]+"${overrides[@]}"})
  if ((DRY_RUN)); then
    quote_command "${aot[@]}"
  else
    echo "+ $(quote_command "${aot[@]}")" >&2
  fi
  # The report goes to stderr: with --dry-run, stdout holds only the command lines.
  status=0
  "${aot[@]}" >&2 || status=$?
  case $status in
    0) ;;
    2) die "$config does not fit $accelerator (bert_jax.tpu.aot's report is above): not creating the slice; change the config, or --skip_aot_check" ;;
    *) die "the AOT check failed (bert_jax.tpu.aot exit status $status, its error is above): not creating the slice; --skip_aot_check to create it anyway" ;;
  esac
fi

# ---- Create ----
spot_flag=()
if ((spot)); then
  spot_flag=(--spot)
fi
if ((!queued)); then
  run gcloud compute tpus tpu-vm create "$name" "${LOCATION[@]}" "--accelerator-type=$accelerator" \
    "--version=$version" ${spot_flag[@]+"${spot_flag[@]}"}
  if ((!DRY_RUN)); then
    note "$name is ready: launch/install.sh --name=$name --zone=$zone${project:+ --project=$project}"
  fi
  exit 0
fi

queued_resource=$(queued_resource_name "$name")
run gcloud compute tpus queued-resources create "$queued_resource" "--node-id=$name" \
  "${LOCATION[@]}" "--accelerator-type=$accelerator" "--runtime-version=$version" \
  ${spot_flag[@]+"${spot_flag[@]}"}
describe=(gcloud compute tpus queued-resources describe "$queued_resource" "${LOCATION[@]}"
          "--format=value(state.state)")
if ((DRY_RUN)); then
  echo "# then, every $POLL_SECONDS s until it prints ACTIVE:"
  quote_command "${describe[@]}"
  exit 0
fi
note "waiting for $queued_resource to be ACTIVE (asking every $POLL_SECONDS s; Ctrl-C stops waiting, not the request)"
last_state=""
while true; do
  state=$("${describe[@]}") ||
    die "could not read the state of $queued_resource (gcloud's error is above); the request stands: $(quote_command "${describe[@]}")"
  if [[ $state != "$last_state" ]]; then
    note "$(date -u +%H:%M:%S) $queued_resource: $state"
    last_state=$state
  fi
  case $state in
    ACTIVE) break ;;
    FAILED | SUSPENDED) die "queued resource $queued_resource is $state: see gcloud compute tpus queued-resources describe $queued_resource --zone=$zone" ;;
  esac
  sleep "$POLL_SECONDS"
done
note "$name is ready: launch/install.sh --name=$name --zone=$zone${project:+ --project=$project}"
