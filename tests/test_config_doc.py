"""docs/CONFIG.md is generated from the config files' comments, and kept in sync with them."""

import os

from bert_jax.config import doc
from bert_jax.config import parsing
from configs import base
from configs import finetune

_UNDOCUMENTED = '''
import ml_collections


def get_config():
  config = ml_collections.ConfigDict()
  # Seed of everything random.
  config.seed = 0
  # The model.
  model = config.model = ml_collections.ConfigDict()
  # Width of the encoder.
  model.hidden_size = 768
  model.num_hidden_layers = 12

  # A comment that a blank line separates from the assignment is not its doc.

  model.dtype = "float32"
  return config
'''


def test_every_field_has_a_doc():
  for name, config in (("base", base.get_config()), ("finetune", finetune.get_config())):
    docs = doc.field_docs(name)
    for path in doc.leaf_values(config):
      assert docs.get(path, "").strip(), f"configs/{name}.py: {path} has no comment above it"


def test_config_md_is_up_to_date():
  path = os.path.join(doc.repo_root(), doc.CONFIG_DOC_PATH)
  with open(path, encoding="utf-8") as f:
    current = f.read()
  assert current == doc.render(), (
      f"{doc.CONFIG_DOC_PATH} is out of date with the config files: run "
      f"`{doc.REGENERATE}`")


def test_check_passes_on_the_repository():
  assert doc.problems() == []


def test_parser_follows_group_names_and_takes_the_comment_above():
  parsed = parsing.parse_config_source(_UNDOCUMENTED, "mine.py")
  assert parsed.parent is None
  assert parsed.groups == {"model": "The model."}
  assert parsed.comments == {
      "seed": "Seed of everything random.", "model.hidden_size": "Width of the encoder.",
      "model.num_hidden_layers": "", "model.dtype": ""}


def test_check_names_an_undocumented_field():
  problems = parsing.source_problems(parsing.parse_config_source(_UNDOCUMENTED, "mine.py"))
  assert problems == ["mine.py:13: model.num_hidden_layers has no comment above it",
                      "mine.py:17: model.dtype has no comment above it"]


def test_check_names_a_field_the_comments_miss():
  config = base.get_config()
  docs = doc.field_docs("base")
  del docs["train.batch_size"]
  assert doc.missing_docs(config, docs, "configs/base.py") == [
      "configs/base.py: train.batch_size has no doc (no comment above its assignment)"]


def test_a_variant_inherits_docs_and_a_new_group_replaces_them():
  variant = '''
from configs import base


def get_config():
  config = base.get_config()
  # Bigger.
  config.model.hidden_size = 1024
  data = config.data = ml_collections.ConfigDict()
  # Rows of a local file.
  data.train_file = ""
  return config
'''
  parsed = parsing.parse_config_source(variant, "variant.py")
  assert parsed.parent == "base"
  assert parsed.groups == {"data": ""}
  assert parsed.comments == {"model.hidden_size": "Bigger.",
                             "data.train_file": "Rows of a local file."}
  # bert_jax/config/finetune.py extends base's `data` and `train`: their fields keep base's
  # docs unless it comments them anew.
  docs = doc.field_docs("finetune")
  assert docs["data.source"].startswith("Where the data comes from")
  assert "model.hidden_size" in docs
  assert docs["train.batch_size"].startswith("Global batch size (the paper's grid")


def test_markdown_values():
  assert doc.format_value(1_000_000) == "`1_000_000`"
  assert doc.format_value(2e-5) == "`2e-5`"
  assert doc.format_value("") == '`""`'
  assert doc.format_value(True) == "`True`"
  assert doc.format_value([("batch", ("data", "fsdp")), ("kv", None)]) == (
      '`[("batch", ("data", "fsdp")), ("kv", None)]`')
