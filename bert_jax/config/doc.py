"""docs/CONFIG.md, generated from the comment above each field of the config files.

    python -m bert_jax.config.doc > docs/CONFIG.md     # write the reference
    python -m bert_jax.config.doc --check              # exit 1, one line per problem

The comments in bert_jax/config/base.py (pre-training) and bert_jax/config/finetune.py
(fine-tuning), the schema inside the package, are the one source of truth: a field's doc is the
comment block directly above its assignment, its default is read from the config object that
`get_config()` returns, so neither can drift from the code. The variants (configs/tiny.py, large.py,
glue.py, ...) are listed by what they change, found by comparing their config with the one they
start from.

`--check` fails when an assignment in base.py or finetune.py has no comment, when a field of
their configs has no doc, or when docs/CONFIG.md is not what this module prints.

Reads the sources with `ast` and `tokenize` only; imports the configs (ml_collections), never
JAX or TensorFlow, so it runs in a fraction of a second.
"""

from collections.abc import Iterator
import importlib
import os
import sys
import textwrap
from typing import Any

from absl import app
from absl import flags
import ml_collections

from bert_jax import errors
from bert_jax.config import parsing

# Config modules whose every assignment must carry a comment: the reference ones. The variants
# change a few values and need none.
DOCUMENTED_CONFIGS = ("base", "finetune")
SCHEMA_PACKAGE = "bert_jax.config"
CONFIG_PACKAGE = "configs"
CONFIG_DOC_PATH = os.path.join("docs", "CONFIG.md")
REGENERATE = "python -m bert_jax.config.doc > docs/CONFIG.md"
# Top-level fields documented with a group rather than under "Top level": the rules say how
# the mesh is used, and sit next to it in base.py.
_SECTION_OF_TOP_LEVEL = {"logical_axis_rules": "mesh"}


def leaf_values(config: ml_collections.ConfigDict, prefix: str = "") -> dict[str, Any]:
  """Dotted path -> value of every leaf (non-ConfigDict value) of a config."""
  values = {}
  for name in config.keys():
    value = config[name]
    if isinstance(value, ml_collections.ConfigDict):
      values.update(leaf_values(value, f"{prefix}{name}."))
    else:
      values[f"{prefix}{name}"] = value
  return values


def missing_docs(config: ml_collections.ConfigDict, docs: dict[str, str],
                 filename: str) -> list[str]:
  """One line for each leaf of `config` that `docs` has no text for."""
  return [f"{filename}: {path} has no doc (no comment above its assignment)"
          for path in leaf_values(config) if not docs.get(path)]


def _under(path: str, group: str) -> bool:
  return path == group or path.startswith(group + ".")


# ---- The repository's config files ----


def _package(name: str) -> str:
  return SCHEMA_PACKAGE if name in DOCUMENTED_CONFIGS else CONFIG_PACKAGE


def _module(name: str):
  """The schema's base and finetune (bert_jax.config), or a config file of configs/."""
  return importlib.import_module(f"{_package(name)}.{name}")


def _filename(name: str) -> str:
  """Path of config module `name` relative to the repository: bert_jax/config/base.py."""
  return os.path.join(*_package(name).split("."), f"{name}.py")


def _read_source(name: str) -> tuple[str, str]:
  """(source, path relative to the repository) of config module `name`."""
  with open(_module(name).__file__, encoding="utf-8") as f:
    return f.read(), _filename(name)


def parse_config_module(name: str) -> parsing.ConfigSource:
  text, filename = _read_source(name)
  return parsing.parse_config_source(text, filename)


def field_docs(name: str) -> dict[str, str]:
  """Dotted path -> doc of every field of config module `name`, inherited ones included.

  A field keeps its parent's doc unless this file comments it anew; the fields of a group this
  file creates afresh (finetune.py's `data`, `train`) have only this file's docs.
  """
  parsed = parse_config_module(name)
  docs = field_docs(parsed.parent) if parsed.parent else {}
  docs = {path: doc for path, doc in docs.items()
          if not any(_under(path, group) for group in parsed.groups)}
  docs.update({path: doc for path, doc in parsed.comments.items() if doc})
  return docs


def variant_names() -> list[str]:
  """The config modules other than the documented ones: tiny, large, glue, ..."""
  directory = os.path.dirname(importlib.import_module(CONFIG_PACKAGE).__file__)
  names = [f[:-3] for f in os.listdir(directory) if f.endswith(".py") and f != "__init__.py"]
  names = [n for n in names if n not in DOCUMENTED_CONFIGS]
  # Pre-training variants first, then fine-tuning ones; by name within each.
  return sorted(names, key=lambda n: (_module(n).get_config().mode != "pretrain", n))


# ---- Markdown ----


def format_value(value: Any) -> str:
  """A value as a markdown code span, written as in a config file."""
  if isinstance(value, bool):
    text = str(value)
  elif isinstance(value, int):
    # Grouped as the config files write them: 1_000_000.
    text = f"{value:_}" if abs(value) >= 10_000 else str(value)
  elif isinstance(value, str):
    text = f'"{value}"'
  elif isinstance(value, (list, tuple)):
    text = "[" + ", ".join(format_value(v).strip("`") for v in value) + "]"
    if isinstance(value, tuple):
      text = "(" + text[1:-1] + ("," if len(value) == 1 else "") + ")"
  elif isinstance(value, float):
    text = repr(value).replace("e-0", "e-")  # 2e-05 -> 2e-5, as the config files write it.
  else:
    text = repr(value)
  return f"`{text}`"


def _wrap(lines: list[str], width: int = 100) -> Iterator[str]:
  """Long prose lines wrapped; tables, headings and indented code left as they are."""
  for line in lines:
    if len(line) <= width or line.startswith(("|", "#", " ", "<!--")):
      yield line
    else:
      yield from textwrap.wrap(line, width, break_long_words=False, break_on_hyphens=False)


def _cell(text: str) -> str:
  return text.replace("|", "\\|")


def _table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> list[str]:
  out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
  return out


def _section(path: str) -> str:
  """The section a field is documented in: its group, or '' for the top level."""
  if "." in path:
    return path.split(".", 1)[0]
  return _SECTION_OF_TOP_LEVEL.get(path, "")


def _pretraining_sections(parsed: parsing.ConfigSource, values: dict[str, Any],
                          docs: dict[str, str]) -> Iterator[str]:
  order = {path: i for i, path in enumerate(parsed.lines)}
  paths = sorted(values, key=lambda p: (order.get(p, len(order)), p))
  sections = [""] + [group for group in parsed.groups if "." not in group]
  for section in sections:
    rows = [(f"`{p}`", format_value(values[p]), docs.get(p, ""))
            for p in paths if _section(p) == section]
    if not rows:
      continue
    if section:
      yield f"## {section}"
      intro = parsed.groups.get(section, "")
    else:
      yield "## Top level"
      intro = "Fields of the config itself (`--config.seed=1`)."
    yield ""
    if intro:
      yield intro
      yield ""
    yield from _table(rows, ("field", "default", "what it does"))
    yield ""


def _finetuning_section(parsed: parsing.ConfigSource, values: dict[str, Any],
                        docs: dict[str, str]) -> Iterator[str]:
  yield f"## Fine-tuning ({parsed.filename})"
  yield ""
  yield (f"`--config.mode=finetune` configs start from {parsed.filename}, which starts from "
         f"{_filename(parsed.parent)} and sets or adds these fields (configs/finetune.py, "
         "glue.py, squad.py and ner.py start from it):")
  yield ""
  rows = [(f"`{p}`", format_value(values[p]), docs.get(p, "")) for p in parsed.comments]
  yield from _table(rows, ("field", "default", "what it does"))
  yield ""
  parent_groups = ({p.split(".", 1)[0] for p in leaf_values(_module(parsed.parent).get_config())}
                   if parsed.parent else set())
  replaced = [g for g in parsed.groups if "." not in g and g in parent_groups]
  added = [g for g in parsed.groups if "." not in g and g not in parent_groups]
  if added:
    yield (f"{' and '.join(f'`{g}`' for g in added)}: "
           f"group{'s' if len(added) > 1 else ''} of fine-tuning only.")
    yield ""
  if replaced:
    yield (f"Its {' and '.join(f'`{g}`' for g in replaced)} are new groups that replace "
           f"{_filename(parsed.parent)}'s: none of the other pre-training "
           f"{' and '.join(f'`{g}.*`' for g in replaced)} fields exist in a fine-tuning config.")
    yield ""
  inherited = []
  for path in values:
    if path not in parsed.comments:
      name = f"{path.split('.', 1)[0]}.*" if "." in path else path
      if name not in inherited:
        inherited.append(name)
  if inherited:
    yield (f"The rest is inherited unchanged from {_filename(parsed.parent)} (documented "
           f"above): {', '.join(f'`{name}`' for name in inherited)}.")
  yield ""
  yield ("Of those, fine-tuning does not read these pre-training fields; a fine-tuning run "
         "that changes one stops with an error naming it: "
         + ", ".join(f"`{path}`" for path in _module("finetune").PRETRAINING_ONLY) + ".")
  yield ""


def _variant_sections() -> Iterator[str]:
  yield "## What the other configs change"
  yield ""
  yield ("Each starts from another config's `get_config()` and changes a few fields; these are "
         "the fields whose values differ from the config it starts from.")
  yield ""
  for name in variant_names():
    parsed = parse_config_module(name)
    values = leaf_values(_module(name).get_config())
    yield f"### {parsed.filename}"
    yield ""
    summary = parsed.docstring.split("\n", 1)[0]
    if parsed.parent is None:
      yield summary
      yield ""
      continue
    parent_values = leaf_values(_module(parsed.parent).get_config())
    parent_file = _filename(parsed.parent)
    changed = [p for p in values if p not in parent_values or parent_values[p] != values[p]]
    yield f"{summary} Starts from {parent_file}" + (", and changes:" if changed else
                                                    "; changes nothing.")
    yield ""
    if changed:
      order = {path: i for i, path in enumerate(parsed.lines)}
      changed.sort(key=lambda p: (order.get(p, len(order)), p))
      rows = [(f"`{p}`", format_value(values[p]),
               format_value(parent_values[p]) if p in parent_values else "(new)")
              for p in changed]
      yield from _table(rows, ("field", "value", f"in {parent_file}"))
      yield ""


def render() -> str:
  """The whole of docs/CONFIG.md."""
  base = parse_config_module("base")
  finetune = parse_config_module("finetune")
  lines = [
      "# Config reference",
      "",
      "<!-- Generated from the comments in bert_jax/config/base.py and "
      f"bert_jax/config/finetune.py: do not edit. Run `{REGENERATE}`. -->",
      "",
      "Every run takes a config file, `--config=configs/<name>.py`, whose `get_config()` returns "
      "an `ml_collections.ConfigDict`. This page lists every field with its default and what it "
      "does: the comment above the field in the package's schema, bert_jax/config/base.py "
      "(pre-training, and the base of every other config) or bert_jax/config/finetune.py "
      "(fine-tuning), generated by `python -m bert_jax.config.doc`.",
      "",
      "Override any field on the command line with `--config.<field>=<value>`:",
      "",
      "    python -m bert_jax.main --config=configs/base.py --workdir=DIR \\",
      "        --config.train.batch_size=64 --config.model.dtype=bfloat16 "
      "--config.data.whole_word_masking=true",
      "",
      "A field that does not exist, or a value that does not fit the field, is a one-line error "
      "that names it, before anything runs. A config file of your own, anywhere, imports "
      "`bert_jax.config.base` (or `finetune`), calls its `get_config()` and changes fields (as "
      "configs/tiny.py does); it cannot add new ones.",
      "",
  ]
  lines += _pretraining_sections(base, leaf_values(_module("base").get_config()),
                                 field_docs("base"))
  lines += _finetuning_section(finetune, leaf_values(_module("finetune").get_config()),
                               field_docs("finetune"))
  lines += _variant_sections()
  return "\n".join(_wrap(lines)).rstrip("\n") + "\n"


def repo_root() -> str:
  """The directory that holds configs/ and docs/."""
  return os.path.dirname(os.path.dirname(os.path.abspath(
      importlib.import_module(CONFIG_PACKAGE).__file__)))


def problems() -> list[str]:
  """Every reason `--check` fails, one line each; empty when all is well."""
  found = []
  for name in DOCUMENTED_CONFIGS:
    found += parsing.source_problems(parse_config_module(name))
    found += missing_docs(_module(name).get_config(), field_docs(name),
                          parse_config_module(name).filename)
  doc_path = os.path.join(repo_root(), CONFIG_DOC_PATH)
  try:
    with open(doc_path, encoding="utf-8") as f:
      current = f.read()
  except FileNotFoundError:
    current = None
  if current is None:
    found.append(f"{CONFIG_DOC_PATH} does not exist: run `{REGENERATE}`")
  elif current != render():
    found.append(f"{CONFIG_DOC_PATH} is out of date with the config files: run `{REGENERATE}`")
  return found


def main(argv: list[str]) -> None:
  """Prints docs/CONFIG.md's content; with --check, the problems (exit status 1 if any)."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not flags.FLAGS.check:
    sys.stdout.write(render())
    return
  found = problems()
  for line in found:
    print(line)
  if found:
    sys.exit(1)
  print(f"{CONFIG_DOC_PATH} is up to date and every field has a comment.")


if __name__ == "__main__":
  # Defined only when run as a program: importing this module (tests) defines no flag.
  flags.DEFINE_boolean("check", False, "Check instead of printing: every field has a comment "
                       f"and {CONFIG_DOC_PATH} is up to date; exit status 1 otherwise.")
  app.run(main, flags_parser=errors.flags_parser("bert_jax.config.doc"))
