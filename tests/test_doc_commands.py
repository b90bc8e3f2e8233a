"""Every `python -m` command in README.md and docs/, as written: its module is a command's one
path, and it gets through its own flag parser and every check it makes before any work.

What runs in full here: bert_jax.tpu.estimate without --aot (arithmetic). The rest need data,
minutes, the network, gs:// or a TPU; they get their flags parsed by the command's own parser
and their config validated as the command would (tests/doc_commands_worker.py). Each command
also runs for real on small inputs elsewhere: bert_jax.main in test_train, test_finetune,
test_modes, test_predict and test_distributed; prepare in test_prepare and test_train;
tokenization and example_task in test_tokenization, test_mistakes and test_finetune; interop in
test_interop and test_export; aot and estimate in test_aot and test_estimate; config.doc in
test_config_doc.
"""

import collections
import json
import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

_REPO = pathlib.Path(__file__).resolve().parent.parent
_WORKER = _REPO / "tests" / "doc_commands_worker.py"
# Each command's one path; the old ones are aliases (bert_jax/moved.py) that docs never use.
COMMANDS = ("bert_jax.main", "bert_jax.pretraining.prepare",
            "bert_jax.finetuning.data.example_task", "bert_jax.tokenizers.tokenization",
            "bert_jax.interop", "bert_jax.tpu.aot", "bert_jax.tpu.estimate", "bert_jax.config.doc")
OLD_PATHS = ("bert_jax.aot", "bert_jax.estimate", "bert_jax.config_doc", "bert_jax.tokenization",
             "bert_jax.data.prepare", "bert_jax.data.example_task")
# Benchmarks with absl flags (like the commands); the others parse theirs with argparse.
ABSL_BENCHES = ("bench.pipeline",)
# Values for the shell variables the docs' loops and pod scripts use.
_SHELL = {"BUCKET": "gs://my-bucket", "HOST": "0", "bs": "32", "lr": "2e-5", "ep": "3"}


def documented_commands() -> list[tuple[str, str]]:
  """(where, command) of every `python -m` command in README.md and docs/*.md: code lines
  (with their continuation lines), and inline code marked '... ' (a reference: its module is
  checked, not its arguments)."""
  found = []
  for path in [_REPO / "README.md", *sorted((_REPO / "docs").glob("*.md"))]:
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
      where = f"{path.relative_to(_REPO)}:{i + 1}"
      code = re.match(r"^(?:    |\t)\s*(?:\$ )?(.*python3?(?:\.12)? (?:-m \S+|bench/).*)$",
                      lines[i])
      if code:
        text = code.group(1)
        while text.rstrip().endswith("\\") and i + 1 < len(lines):
          i += 1
          text = text.rstrip()[:-1] + " " + lines[i].strip()
        found += [(where, part.strip()) for part in text.split("&&")]
      else:  # Prose names a command, or part of one: a reference, not a whole command.
        found += [(where, "... " + inline)
                  for inline in re.findall(r"`(python3? -m [^`]+)`", lines[i])]
      i += 1
  return [(where, text) for where, text in found
          if re.search(r"python3?(\.12)? (-m |bench/)", text)]


def _module_and_args(command: str) -> tuple[str, list[str], bool]:
  """(module, its arguments, whether the command is whole): a command eliding arguments
  ('...', '<x>') is a template, its module checked but not its arguments. Optional
  '[--flag]' groups are taken in, and 'a|b' alternatives at their first."""
  command = re.sub(r"\$\{?(\w+)\}?", lambda m: _SHELL.get(m.group(1), m.group(0)), command)
  command = command.split(" >")[0].split(" 2>")[0].split(" | ")[0]
  whole = "..." not in command and "<" not in command
  command = command.removeprefix("... ")
  tokens = shlex.split(command.replace("[", " ").replace("]", " "), comments=True)
  if "-m" in tokens:
    start = tokens.index("-m") + 1
    module = tokens[start]
  else:  # python bench/NAME.py
    start = next(i for i, token in enumerate(tokens) if token.startswith("bench/"))
    module = tokens[start].removesuffix(".py").replace("/", ".")
  args = [token.split("|")[0] for token in tokens[start + 1:] if token != "..."]
  return module, args, whole


def test_every_documented_command_names_its_one_path():
  modules = collections.Counter()
  for where, command in documented_commands():
    module, _, _ = _module_and_args(command)
    assert module not in OLD_PATHS, f"{where}: {command} (an old path)"
    assert (module in COMMANDS or module.startswith("bench.")
            or module in ("venv", "pip", "pytest")), f"{where}: unknown command {module}"
    modules[module] += 1
  # The docs show every command (a missing one would be undocumented).
  assert set(COMMANDS) <= set(modules), set(COMMANDS) - set(modules)
  assert sum(modules.values()) > 100


def _sandbox(tmp_path, commands: list[list[str]]) -> pathlib.Path:
  """The directory a reader runs the docs' commands from: the repository's configs/, and the
  bert_config.json of Google's BERT-Large checkpoint where a command names one by a relative
  path (the docs' --bert_config examples are all BERT-Large)."""
  sandbox = tmp_path / "cwd"
  sandbox.mkdir()
  (sandbox / "configs").symlink_to(_REPO / "configs")
  for args in commands:
    for arg in args:
      if arg.startswith("--bert_config=") and not arg.split("=", 1)[1].startswith("/"):
        path = sandbox / arg.split("=", 1)[1]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(BERT_LARGE))
  return sandbox


# The original's bert_config.json of BERT-Large (uncased_L-24_H-1024_A-16).
BERT_LARGE = {"attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
              "hidden_dropout_prob": 0.1, "hidden_size": 1024, "initializer_range": 0.02,
              "intermediate_size": 4096, "max_position_embeddings": 512,
              "num_attention_heads": 16, "num_hidden_layers": 24, "type_vocab_size": 2,
              "vocab_size": 30522}


def _run_worker(module: str, commands: list[list[str]], tmp_path) -> list[str | None]:
  tmp_path.mkdir(parents=True, exist_ok=True)
  commands_file, results_file = tmp_path / f"{module}.json", tmp_path / f"{module}.out.json"
  commands_file.write_text(json.dumps(commands))
  result = subprocess.run([sys.executable, str(_WORKER), module, str(commands_file),
                           str(results_file)], cwd=_sandbox(tmp_path, commands),
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(_REPO)})
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(results_file.read_text())


def _grouped() -> dict[str, list[tuple[str, str, list[str]]]]:
  groups = collections.defaultdict(list)
  for where, command in documented_commands():
    module, args, whole = _module_and_args(command)
    if not whole or not (module in COMMANDS or module.startswith("bench.")):
      continue
    if module in ABSL_BENCHES or not module.startswith("bench."):
      groups[module].append((where, command, args))
    else:  # argparse: one process for them all.
      groups["bench"].append((where, command, [module, *args]))
  return groups


@pytest.mark.parametrize("module", [*COMMANDS, *ABSL_BENCHES, "bench"])
def test_documented_commands_pass_their_own_checks(module, tmp_path):
  commands = _grouped()[module]
  if module == "bert_jax.tokenizers.tokenization":
    assert not commands or all(args[0] == "train" for _, _, args in commands)
  results = _run_worker(module, [args for _, _, args in commands], tmp_path)
  failed = [f"{where}: {command}\n    -> {error}"
            for (where, command, _), error in zip(commands, results) if error]
  assert not failed, "\n".join(failed)


def test_a_check_that_fails_is_reported(tmp_path):
  # The worker does not wave commands through: a misspelt field, a batch that does not split
  # over the mesh, and an unknown slice each come back as the command's own error line.
  assert _run_worker("bert_jax.main", [
      ["--config=configs/tiny.py", "--workdir=/tmp/w", "--config.train.batch_sise=8"],
      ["--config=configs/tiny.py", "--workdir=/tmp/w", "--config.mesh.data=2",
       "--config.train.batch_size=3"]], tmp_path) == [
          "bert_jax: error: unknown config field train.batch_sise (did you mean "
          "train.batch_size?)", _ANY]
  errors = _run_worker("bert_jax.tpu.estimate", [
      ["--config=configs/large.py", "--topology=v9z-8", "--config.model.dtype=bfloat16"]],
      tmp_path / "estimate")
  assert errors[0] and "v9z-8" in errors[0]


class _Any:
  def __eq__(self, other):
    return bool(other)


_ANY = _Any()


def test_old_paths_say_where_the_command_is_and_run_it():
  result = subprocess.run(
      [sys.executable, "-m", "bert_jax.estimate", "--config=configs/large.py",
       "--topology=v5litepod-16", "--config.model.dtype=bfloat16"],
      cwd=_REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert ("bert_jax: `python -m bert_jax.estimate` is now `python -m bert_jax.tpu.estimate`"
          in result.stderr)
  assert "chip-hours" in result.stdout


def _project_texts() -> list[pathlib.Path]:
  tracked = subprocess.run(["git", "ls-files"], cwd=_REPO, capture_output=True, text=True,
                           check=True).stdout.split()
  return [_REPO / name for name in tracked
          if name.endswith((".py", ".md", ".sh", ".cfg", ".toml")) or name == ".ci/run"]


def test_the_project_cites_only_what_it_contains():
  # Every file path named in the code and docs (bert_jax/..., bench/..., docs/...) and every
  # relative link in the docs is in the repository: a rule or target the project relies on is
  # written in its own docs.
  missing = []
  for path in _project_texts():
    if not path.exists():  # Deleted in the working tree, not yet committed.
      continue
    text = path.read_text(encoding="utf-8")
    where = path.relative_to(_REPO)
    # Tests name paths they make (or that must not exist); everything else names what is here.
    cited_paths = [] if where.parts[0] == "tests" else re.findall(
        r"(?<![\w./-])((?:bert_jax|bench|tests|configs|launch|docs)/[\w/.-]*\w\.(?:py|md|sh|png))",
        text)
    for cited in cited_paths:
      if not (_REPO / cited).exists():
        missing.append(f"{where}: {cited}")
    if path.suffix == ".md":
      for link in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if "://" not in link and not link.startswith("mailto:") and not (
            path.parent / link).exists():
          missing.append(f"{where}: link {link}")
    design = "DESIGN" + ".md"  # A page outside the repository, which it once cited.
    if design in text:
      missing.append(f"{where}: {design}")
  assert not missing, "\n".join(missing)
