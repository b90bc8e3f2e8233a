#!/usr/bin/env bash
# Installs bert_jax on every worker of a TPU VM slice.
set -euo pipefail
# shellcheck source=common.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<'EOF'
Usage: launch/install.sh --name=NAME --zone=ZONE [--project=PROJECT]
           [--repo=URL | --wheel=gs://BUCKET/bert_jax-*.whl] [--ref=REF] [--dry-run]

On every worker (gcloud compute tpus tpu-vm ssh --worker=all): installs Python
3.12 if the image's python3 is older (Ubuntu 22.04's is 3.10 and has no 3.12 package: it comes
from the deadsnakes archive), makes a venv ~/bert_jax_venv, puts the code
in ~/bert_jax (replacing what was there) and pip-installs it with the 'tpu'
extra (the libtpu that jax expects). run.sh runs from there.

Where the code comes from:
  (default)  this checkout: `git archive REF` (default REF: HEAD, so commit
             first: uncommitted changes are left out), copied to each worker.
  --repo     git clone URL on each worker, then checkout REF (default: main).
  --wheel    a wheel on GCS, copied by each worker (its service account must
             read the bucket); this checkout's configs/ is copied beside it,
             since the wheel holds only the bert_jax package.

  --name     TPU node name.    --zone     Its zone.
  --project  Google Cloud project; default: gcloud's configured one.
  --dry-run  Print the commands, one a line, and run none of them.
EOF
}

name="" zone="" project="" repo="" wheel="" ref=""
while (($# > 0)); do
  case "$1" in
    --name=*) name=${1#*=} ;;
    --zone=*) zone=${1#*=} ;;
    --project=*) project=${1#*=} ;;
    --repo=*) repo=${1#*=} ;;
    --wheel=*) wheel=${1#*=} ;;
    --ref=*) ref=${1#*=} ;;
    --dry-run) DRY_RUN=1 ;;
    -h | --help) usage; exit 0 ;;
    *) bad_flag "$1" ;;
  esac
  shift
done
require "$name" --name
require "$zone" --zone
[[ -z $repo || -z $wheel ]] || die "give --repo or --wheel, not both"
[[ -z $wheel || $wheel == gs://*.whl ]] || die "--wheel must be a gs://.../*.whl file, got '$wheel'"
[[ -z $wheel || -z $ref ]] || die "--ref is for --repo or this checkout, not --wheel"
set_location "$zone" "$project"

# A copy of the code for the workers, from this machine (default, and --wheel's configs/).
archive="${TMPDIR:-/tmp}/bert_jax-$name.tar.gz"
if [[ -z $repo && -z $wheel ]]; then
  ref=${ref:-HEAD}
  if ((!DRY_RUN)) && [[ $ref == HEAD && -n $(git -C "$REPO_ROOT" status --porcelain) ]]; then
    note "warning: this checkout has uncommitted changes, which git archive leaves out"
  fi
  run git -C "$REPO_ROOT" archive --format=tar.gz "--output=$archive" "$ref"
elif [[ -n $wheel ]]; then
  run tar -czf "$archive" -C "$REPO_ROOT" configs
fi

# shellcheck disable=SC2088  # The ~ is for the worker's shell to expand.
pip='~/bert_jax_venv/bin/pip'
# The commands each worker runs, joined into one line for ssh. ~ and $HOME expand there.
steps=(
  "$STOP_IF_RUNNING"
  "set -e"
  # bert_jax needs Python 3.12+ (jax 0.11 and later do). Ubuntu 24.04 images have it; 22.04 (most
  # TPU VM images) has 3.10 and no 3.12 package, so 3.12 comes from the deadsnakes archive, the
  # usual apt source of newer Pythons for Ubuntu (-n: apt-get update below, which waits for the lock).
  "if python3 -c 'import sys; sys.exit(sys.version_info < (3, 12))'; then python=python3; packages=python3-venv; else python=python3.12; packages='python3.12 python3.12-venv'; sudo add-apt-repository -y -n ppa:deadsnakes/ppa; fi"
  # apt waits for the image's own updates, which hold the lock just after the slice starts.
  "sudo apt-get -q -o DPkg::Lock::Timeout=600 update"
  "sudo apt-get -q -y -o DPkg::Lock::Timeout=600 install \$packages git"
  "test -x ~/bert_jax_venv/bin/python || \$python -m venv ~/bert_jax_venv"
  "rm -rf ~/bert_jax"
)
if [[ -n $repo ]]; then
  steps+=("git clone -q $(shell_quote "$repo") ~/bert_jax"
          "cd ~/bert_jax"
          "git checkout -q $(shell_quote "${ref:-main}")"
          "$pip install -q -e '.[tpu]'")
else
  run gcloud compute tpus tpu-vm scp "$archive" "$name:bert_jax.tar.gz" "${LOCATION[@]}" \
    --worker=all
  steps+=("mkdir ~/bert_jax"
          "tar -xzf ~/bert_jax.tar.gz -C ~/bert_jax"
          "cd ~/bert_jax")
  if [[ -n $wheel ]]; then
    wheel_file=${wheel##*/}
    steps+=("gcloud storage cp $(shell_quote "$wheel") ."
            "$pip install -q ./$(shell_quote "${wheel_file}[tpu]")")
  else
    steps+=("$pip install -q -e '.[tpu]'")
  fi
fi
steps+=("echo \"\$(hostname): bert_jax installed in ~/bert_jax_venv\"")

remote=""
for step in "${steps[@]}"; do
  remote+="${remote:+; }$step"
done
run gcloud compute tpus tpu-vm ssh "$name" "${LOCATION[@]}" --worker=all "--command=$remote"
if ((!DRY_RUN)); then
  note "installed on every worker of $name: launch/run.sh --name=$name --zone=$zone${project:+ --project=$project} --config=... --workdir=gs://..."
fi
