"""The accelerator check's packing section: one fine-tuning step on real-length sentences,
packing on and off, beside transformers with dynamic padding.

Each framework trains the same batch of `batch_size` sentences per step (a GLUE-style
classifier with 3 labels, AdamW, bf16 compute on a GPU): bert_jax with the sentences padded to
seq_length (packing off) and packed into rows (packing on, finetuning/data/packing.py), and
transformers' BertForSequenceClassification with the batch padded to its longest sentence (the
HF Trainer's default). The sentence lengths follow the example task's: a median of about 20
tokens with a long tail (a log-normal draw, cut to [4, seq_length]). Sentences per second is
batch_size over the median step. No TensorFlow: it runs where only JAX and PyTorch are.
"""

import argparse
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bench import harness
from bert_jax.finetuning import finetune_program
from bert_jax.finetuning.data import packing
from bert_jax.model import families
from bert_jax.model import modeling
from bert_jax.runtime import train_state

NUM_LABELS = 3
_CLS, _SEP, _FIRST_WORD = 101, 102, 1000  # Google's uncased ids; any work for timing.


def sentence_features(batch_size: int, seq_length: int, seed: int = 0) -> dict[str, np.ndarray]:
  """batch_size random sentences of real lengths: [CLS] words [SEP], padded to seq_length."""
  rng = np.random.default_rng(seed)
  lengths = np.clip(np.round(rng.lognormal(np.log(20), 0.45, batch_size)), 4,
                    seq_length).astype(int)
  positions = np.arange(seq_length)[None]
  input_mask = (positions < lengths[:, None]).astype(np.int32)  # [batch, seq_length]
  input_ids = rng.integers(_FIRST_WORD, 30522, (batch_size, seq_length)).astype(np.int32)
  input_ids = np.where(positions == 0, _CLS, np.where(positions == lengths[:, None] - 1, _SEP,
                                                      input_ids)) * input_mask
  return {"input_ids": input_ids.astype(np.int32), "input_mask": input_mask,
          "segment_ids": np.zeros_like(input_mask),
          "label_ids": rng.integers(0, NUM_LABELS, batch_size).astype(np.int32)}


def bert_jax_row(preset: str, features: dict[str, np.ndarray], packed: bool,
                 args: argparse.Namespace, dtype: str) -> dict:
  """finetune_program.finetune_step, jitted with the state donated, on the batch packed or not."""
  model_config = modeling.BertConfig(vocab_size=30522, dtype=dtype,
                                     attention_probs_dropout_prob=0.0,
                                     **harness.PRESETS[preset])
  model = finetune_program.create_model("classification", model_config, NUM_LABELS)
  tx = optax.adamw(1e-4)
  batch = {**features, "weights": np.ones(len(features["input_ids"]), np.float32)}
  rows = len(batch["input_ids"])
  if packed:
    packed_rows = packing.pack(features, packing.TEXT)
    batch, rows = packed_rows.features, packed_rows.num_rows
  params = jax.jit(lambda rng: train_state.init_params(rng, model, {
      k: v[:1] for k, v in batch.items()}))(jax.random.key(0))
  state = train_state.TrainState(step=jnp.array(0), params=params, opt_state=tx.init(params))
  step = jax.jit(functools.partial(finetune_program.finetune_step, model=model, tx=tx,
                                   loss=families.get("classification").loss), donate_argnums=(0,))
  batch = jax.device_put(batch)

  def one_step():
    nonlocal state
    state, metrics = step(state, batch, jax.random.key(1))
    float(metrics["loss"])  # The host sync, as a run's log line.

  seconds = harness.time_calls(one_step, args.warmup, args.steps)
  real = int(features["input_mask"].sum())
  return _timing(seconds, len(features["input_ids"]), {
      "rows": rows, "padding": 1 - real / (rows * features["input_ids"].shape[1])})


def torch_row(preset: str, features: dict[str, np.ndarray], args: argparse.Namespace,
              dtype: str) -> dict:
  """transformers' classifier on the batch padded to its longest sentence."""
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel

  config = harness.preset_config(preset, features["input_ids"].shape[1], batch_size=1)
  config.model.attention_probs_dropout_prob = 0.0
  device = harness.torch_device(args)
  model = transformers.BertForSequenceClassification(transformers.BertConfig(
      **harness.hf_config_dict(config), num_labels=NUM_LABELS, attn_implementation="sdpa"))
  model = model.to(device).train()
  longest = int(features["input_mask"].sum(1).max())
  inputs = {**harness.torch_inputs({k: v[:, :longest] for k, v in features.items()
                                    if k != "label_ids"}, device),
            "labels": torch.tensor(features["label_ids"], dtype=torch.long, device=device)}
  seconds, note = harness.time_torch_training(
      model, inputs, config, args,
      autocast_dtype=torch.bfloat16 if dtype == "bfloat16" else None)
  real = int(features["input_mask"].sum())
  return _timing(seconds, len(features["input_ids"]), {
      "rows": len(features["input_ids"]),
      "padding": 1 - real / (len(features["input_ids"]) * longest), "note": note})


def _timing(seconds: np.ndarray, batch_size: int, fields: dict) -> dict:
  median = float(np.median(seconds))
  return {"ms_per_step": 1e3 * median, "sentences_per_second": batch_size / median, **fields}
