# shellcheck shell=bash
# What the launch scripts share: errors, flag checks, quoting, and running or printing commands.
# Sourced, never run. Written for bash 3.2 too (macOS's /bin/bash): no namerefs, no associative
# arrays, and empty arrays expanded as ${a[@]+"${a[@]}"} (bash < 4.4 calls them unset under -u).

DRY_RUN=0  # 1: print the commands, one a line, and run none of them (--dry-run).
SCRIPT_NAME=$(basename "$0")
# shellcheck disable=SC2034  # Used by the scripts that source this file.
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# die MESSAGE: one line on stderr, exit status 1.
die() {
  echo "$SCRIPT_NAME: error: $*" >&2
  exit 1
}

# note MESSAGE: one line on stderr (stdout is for the commands in --dry-run).
note() {
  echo "$SCRIPT_NAME: $*" >&2
}

# require VALUE FLAG: dies naming FLAG when VALUE is empty.
require() {
  [[ -n $1 ]] || die "missing required flag $2 (see --help)"
}

# bad_flag ARG: the error for an argument no case of the caller's parser took.
bad_flag() {
  case "$1" in
    --*=*) die "unknown flag ${1%%=*} (see --help)" ;;
    --*) die "unknown flag $1, or a flag without its value: write $1=VALUE (see --help)" ;;
    *) die "unexpected argument '$1' (flags are --name=VALUE; see --help)" ;;
  esac
}

# single_quote ARG: ARG in single quotes, each ' inside written as '\''.
single_quote() {
  local escaped="'\\''"
  printf "'%s'" "${1//\'/$escaped}"
}

# shell_quote ARG: ARG as a shell reads it back: bare when no character is special, else in
# single quotes; for --flag=value only the value is quoted, which reads better.
shell_quote() {
  local bare='^[A-Za-z0-9_./:=@%+,-]+$' flag_value='^(--[A-Za-z0-9_.-]+=)(.*)$'
  if [[ $1 =~ $bare ]]; then
    printf '%s' "$1"
  elif [[ $1 =~ $flag_value ]]; then
    printf '%s' "${BASH_REMATCH[1]}"
    single_quote "${BASH_REMATCH[2]}"
  else
    single_quote "$1"
  fi
}

# quote_command ARG...: the arguments as one command line that can be pasted into a shell.
quote_command() {
  local line="" arg
  for arg in "$@"; do
    line+="${line:+ }$(shell_quote "$arg")"
  done
  printf '%s\n' "$line"
}

# run ARG...: with --dry-run prints the command line on stdout; otherwise prints it on stderr
# after '+ ' and runs it.
run() {
  if ((DRY_RUN)); then
    quote_command "$@"
  else
    echo "+ $(quote_command "$@")" >&2
    "$@"
  fi
}

# set_location ZONE PROJECT: sets LOCATION, the array of --zone (and --project, when given) that
# every gcloud compute tpus command takes.
set_location() {
  LOCATION=("--zone=$1")
  if [[ -n $2 ]]; then
    LOCATION+=("--project=$2")
  fi
}

# queued_resource_name NODE: the queued resource create_tpu.sh --queued makes for NODE.
queued_resource_name() {
  echo "$1-qr"
}

# For a worker's shell: stops (exit 1) when the bert_jax run that run.sh started there is still
# going, rather than start a second one or replace the code under it.
# shellcheck disable=SC2016,SC2034  # For the worker's shell to expand; used by the scripts.
STOP_IF_RUNNING='if test -f ~/train.pid && kill -0 "$(cat ~/train.pid)" 2>/dev/null; then echo "$(hostname): bert_jax is running (pid $(cat ~/train.pid)); stop it first" >&2; exit 1; fi'
