"""The model's config.json: the original's bert_config.json and Hugging Face's config.json.

epath, not tf.io.gfile: local and gs:// paths alike, and no TensorFlow import, so a model can be
read where only JAX is installed (GPU boxes; bench/device_check.py).
"""

import json

from etils import epath

from bert_jax import errors
from bert_jax.interop import hf_heads
from bert_jax.model import modeling

# Fields of the original bert_config.json, in its order; HF's config.json adds layer_norm_eps.
JSON_FIELDS = (
    "attention_probs_dropout_prob", "hidden_act", "hidden_dropout_prob", "hidden_size",
    "initializer_range", "intermediate_size", "max_position_embeddings", "num_attention_heads",
    "num_hidden_layers", "type_vocab_size", "vocab_size", "layer_norm_eps",
)


def read_values(path: str) -> dict:
  """The JSON object of a config file; a file that is not one is a UserError naming it."""
  try:
    values = json.loads(epath.Path(path).read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise errors.UserError(f"{path}: not a JSON model config ({e})") from None
  if not isinstance(values, dict):
    raise errors.UserError(f"{path}: not a JSON model config (an object of fields)")
  return values


def read(path: str) -> modeling.BertConfig:
  """Reads the original's bert_config.json or an HF config.json (HF's extra keys are ignored)."""
  values = read_values(path)
  if values.get("position_embedding_type", "absolute") != "absolute":
    raise errors.UserError(f"{path}: position_embedding_type="
                           f"{values['position_embedding_type']!r} is not supported (only "
                           "'absolute')")
  return modeling.BertConfig(**{k: values[k] for k in JSON_FIELDS if k in values})


def write(config: modeling.BertConfig, path: str, head: hf_heads.Head = hf_heads.Head()
          ) -> None:
  """Writes a config.json that both the original code and HF `transformers` read; `head` adds
  the architecture and labels of a fine-tuned model (id2label, label2id, problem_type)."""
  values = {k: getattr(config, k) for k in JSON_FIELDS}
  values.update(model_type="bert", pad_token_id=0, position_embedding_type="absolute",
                **head.hf_config())
  epath.Path(path).write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")
