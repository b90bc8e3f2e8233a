"""Packed rows (data.packing): where each example goes, and that packing changes no number.

Exactness (dropout 0, float32): every example's outputs from packed rows equal the unpacked
model's within 1e-5, for each head and for the embeddings, and training steps on packed and
unpacked batches of the same examples give the same losses.
"""

import functools
import os
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bert_jax.finetuning import encode
from bert_jax.finetuning import finetune_program
from bert_jax.finetuning.data import featurize
from bert_jax.finetuning.data import packing
from bert_jax.finetuning.data import tasks
from bert_jax.finetuning.families import registry
from bert_jax.model import attention
from bert_jax.model import families
from bert_jax.model import heads
from bert_jax.model import modeling
from bert_jax.runtime import sharding
from bert_jax.runtime import train_state
from configs import tiny

_SPLASH_ATTENTION = attention.splash_attention
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # As test_aot.py: compile only.

_SENTENCES = [
    "A film that is good.", "Bad.", "The plot drags on and on, but the acting saves it in the "
    "end.", "Fine", "I would watch it again tomorrow with friends.", "No.", "An hour too long.",
    "Great music, weak story, lovely photography and a cast that does its best.", "Meh.",
    "It works.", "Two thumbs up from the whole family.", "Why?"]


def _text_features(tokenizer, max_seq_length=32, pairs=True):
  examples = [tasks.TextExample(f"x-{i}", text, _SENTENCES[-1 - i] if pairs and i % 3 == 0
                                else None, i % 2) for i, text in enumerate(_SENTENCES)]
  return featurize.encode_text_examples(examples, tokenizer, max_seq_length)


def _token_features(tokenizer, max_seq_length=32):
  examples = [tasks.TokenExample(f"t-{i}", text.split(), [j % 3 for j in range(len(text.split()))])
              for i, text in enumerate(_SENTENCES)]
  return featurize.encode_token_examples(examples, tokenizer, max_seq_length)


def _span_features(tokenizer, max_seq_length=32):
  """SQuAD-like windows: sentence pairs with an answer span in B, or none ([CLS], 0)."""
  features = _text_features(tokenizer, max_seq_length)
  del features["label_ids"]
  length = features["input_mask"].sum(axis=1)
  features["start_positions"] = np.where(np.arange(len(length)) % 4 == 1, 0,
                                         length // 2).astype(np.int32)
  features["end_positions"] = np.where(features["start_positions"] == 0, 0,
                                       length - 2).astype(np.int32)
  return features


def _model_config(tokenizer, **overrides):
  return modeling.BertConfig(**{**dict(
      vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
      intermediate_size=64, max_position_embeddings=32, hidden_dropout_prob=0.0,
      attention_probs_dropout_prob=0.0), **overrides})


def test_best_fit_decreasing_fills_rows_without_overflow():
  lengths = np.array([60, 30, 30, 3, 4, 64, 1])  # 192 tokens: three full rows of 64.
  rows, slots = packing.assign_rows(lengths, 64)
  assert rows.max() + 1 == 3  # 64 | 30 + 30 + 4 | 60 + 3 + 1.
  for row in range(3):
    assert lengths[rows == row].sum() <= 64
    assert sorted(slots[rows == row]) == list(range(np.sum(rows == row)))
  rows, slots = packing.assign_rows(np.full(10, 2), 64, max_per_row=4)
  assert rows.max() + 1 == 3 and slots.max() == 3


def test_each_example_keeps_its_tokens_types_positions_and_cls(tokenizer):
  features = _text_features(tokenizer)
  packed = packing.pack(features, packing.TEXT)
  rows = packed.features
  assert packed.num_rows < len(_SENTENCES)
  assert packed.padding_fraction() < 1 - features["input_mask"].mean()
  for i, (row, slot, start, length) in enumerate(zip(packed.row, packed.slot, packed.start,
                                                     packed.length)):
    span = slice(start, start + length)
    np.testing.assert_array_equal(rows["input_ids"][row, span], features["input_ids"][i, :length])
    np.testing.assert_array_equal(rows["segment_ids"][row, span],
                                  features["segment_ids"][i, :length])
    np.testing.assert_array_equal(rows["position_ids"][row, span], np.arange(length))
    assert (rows["example_ids"][row, span] == slot + 1).all()
    assert rows["input_ids"][row, rows["cls_positions"][row, slot]] == tokenizer.cls_id
    assert rows["label_ids"][row, slot] == features["label_ids"][i]
    assert rows["weights"][row, slot] == 1.0
  assert rows["weights"].sum() == len(_SENTENCES)
  # Padding: example id 0, mask 0, and nothing else of any example.
  assert ((rows["example_ids"] == 0) == (rows["input_mask"] == 0)).all()


@pytest.fixture(scope="module")
def text_setup(tokenizer):
  features = _text_features(tokenizer)
  return features, packing.pack(features, packing.TEXT)


def _apply(model, params, batch):
  return model.apply(params, batch["input_ids"], batch["segment_ids"], batch["input_mask"],
                     **modeling.packing_inputs(batch))


@pytest.mark.parametrize("num_labels", [3, 1])
def test_classifier_outputs_equal_unpacked(tokenizer, text_setup, num_labels):
  features, packed = text_setup
  model = heads.BertForSequenceClassification(_model_config(tokenizer), num_labels)
  params = model.init(jax.random.key(0), *families.model_inputs(features))
  expected = _apply(model, params, features)  # [examples, labels]
  got = packing.unpack(_apply(model, params, packed.features), packed, packing.TEXT)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_tagger_outputs_equal_unpacked(tokenizer):
  features = _token_features(tokenizer)
  packed = packing.pack(features, packing.TAGS)
  model = heads.BertForTokenClassification(_model_config(tokenizer), 3)
  params = model.init(jax.random.key(0), *families.model_inputs(features))
  expected = np.asarray(_apply(model, params, features))  # [examples, length, labels]
  got = packing.unpack(_apply(model, params, packed.features), packed, packing.TAGS)
  real = features["input_mask"].astype(bool)
  np.testing.assert_allclose(got[real], expected[real], rtol=1e-5, atol=1e-5)
  # Word tags come back the same way as unpacked predictions.
  assert (featurize.decode_token_predictions(features, got.argmax(-1))
          == featurize.decode_token_predictions(features, expected.argmax(-1)))


def test_span_outputs_equal_unpacked(tokenizer):
  features = _span_features(tokenizer)
  packed = packing.pack(features, packing.SPANS)
  assert packed.num_rows < len(_SENTENCES)
  for i, (row, slot, start) in enumerate(zip(packed.row, packed.slot, packed.start)):
    # Answer positions become columns of the row (no answer: the window's own [CLS]).
    assert packed.features["start_positions"][row, slot] == start + features["start_positions"][i]
    assert packed.features["end_positions"][row, slot] == start + features["end_positions"][i]
  model = heads.BertForQuestionAnswering(_model_config(tokenizer))
  params = model.init(jax.random.key(0), *families.model_inputs(features))
  expected = [np.asarray(x) for x in _apply(model, params, features)]  # 2 x [examples, length]
  got = packing.unpack(_apply(model, params, packed.features), packed, packing.SPANS)
  real = features["input_mask"].astype(bool)
  for got_logits, expected_logits in zip(got, expected):
    np.testing.assert_allclose(got_logits[real], expected_logits[real], rtol=1e-5, atol=1e-5)
    assert (got_logits[~real] == 0).all()


def test_embeddings_equal_unpacked(tokenizer, text_setup):
  features, _ = text_setup
  features = {k: v for k, v in features.items() if k != "label_ids"}
  packed = packing.pack(features, packing.TEXT)
  model = modeling.BertModel(_model_config(tokenizer))
  params = model.init(jax.random.key(0), *families.model_inputs(features))["params"]
  embed = functools.partial(encode.embed, model=model)
  expected = embed(params, features)
  got = packing.unpack(embed(params, packed.features), packed, packing.TEXT)
  for name in ("cls", "pooled", "mean"):
    np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("family", ["classification", "regression", "token", "span"])
def test_training_on_packed_batches_gives_the_same_losses(tokenizer, family):
  if family == "token":
    features = _token_features(tokenizer)
  elif family == "span":
    features = _span_features(tokenizer)
  else:
    features = _text_features(tokenizer)
    if family == "regression":
      features["label_ids"] = features["label_ids"].astype(np.float32) * 2.5
  packed = packing.pack(features, registry.get(family).packing)
  num_labels = {"classification": 2, "regression": 1, "token": 3, "span": 2}[family]
  model = finetune_program.create_model(family, _model_config(tokenizer), num_labels)
  params = model.init(jax.random.key(0), *families.model_inputs(features))["params"]
  tx = optax.adamw(1e-3)
  step = jax.jit(functools.partial(finetune_program.finetune_step, model=model, tx=tx,
                                   loss=families.get(family).loss))
  # As finetune.py: every batch carries weights, per row (packed text rows: per example slot).
  unpacked = {**features, "weights": np.ones(len(features["input_ids"]), np.float32)}
  packed_rows = {"weights": np.ones(packed.num_rows, np.float32), **packed.features}
  losses = {}
  for name, batch in (("unpacked", unpacked), ("packed", packed_rows)):
    state = train_state.TrainState(step=jnp.array(0), params=params, opt_state=tx.init(params))
    losses[name] = []
    for _ in range(3):
      state, scalars = step(state, batch, jax.random.key(1))
      losses[name].append(float(scalars["loss"]))
  np.testing.assert_allclose(losses["packed"], losses["unpacked"], rtol=2e-5)
  assert losses["unpacked"][2] < losses["unpacked"][0]  # It trained.


def test_splash_knows_the_packing(tokenizer, text_setup, monkeypatch):
  """'splash' (Pallas interpreter) takes the example ids as its segment ids."""
  monkeypatch.setattr(attention, "splash_attention",
                      functools.partial(_SPLASH_ATTENTION, interpret=True))
  _, packed = text_setup
  xla_model = modeling.BertModel(_model_config(tokenizer))
  splash_model = modeling.BertModel(_model_config(tokenizer, attention="splash"))
  params = xla_model.init(jax.random.key(0), *families.model_inputs(packed.features))
  real = packed.features["input_mask"].astype(bool)
  (sequence, pooled), (expected, expected_pooled) = (
      _apply(splash_model, params, packed.features), _apply(xla_model, params, packed.features))
  np.testing.assert_allclose(np.asarray(sequence)[real], np.asarray(expected)[real], rtol=1e-4,
                             atol=1e-4)
  np.testing.assert_allclose(pooled, expected_pooled, rtol=1e-4, atol=1e-4)


def test_packed_splash_compiles_for_a_tpu_slice(tokenizer, text_setup):
  """The real kernel (Mosaic) in the sharded fine-tuning step on packed rows, on v5e:2x2."""
  pytest.importorskip("libtpu")
  from bert_jax.tpu import aot  # pylint: disable=g-import-not-at-top
  from bert_jax.tpu import tpu_topology  # pylint: disable=g-import-not-at-top
  _, packed = text_setup
  config = tiny.get_config()
  config.mesh.update(data=2, fsdp=2)
  mesh = sharding.create_mesh(config.mesh,
                              devices=aot.topology_devices(tpu_topology.parse("v5e:2x2")))
  rules = sharding.logical_axis_rules(config)
  model = heads.BertForSequenceClassification(
      _model_config(tokenizer, attention="splash", dtype="bfloat16"), 2)
  tx = optax.adamw(1e-3)
  shapes = {k: v[:1] for k, v in packed.features.items()}
  # Outside jax.set_mesh: no op can run on compile-only devices (as aot.py builds its program).
  with nn.logical_axis_rules(rules):
    abstract_state, state_shardings = train_state.abstract_train_state(
        model, tx, shapes, jax.random.key(0), mesh, rules)
  batch_sharding = sharding.batch_sharding(mesh, rules)
  replicated = sharding.replicated(mesh)
  step = jax.jit(functools.partial(finetune_program.finetune_step, model=model, tx=tx,
                                   loss=families.get("classification").loss),
                 in_shardings=(state_shardings, batch_sharding, replicated),
                 out_shardings=(state_shardings, replicated))
  batch = {k: jax.ShapeDtypeStruct((8,) + v.shape[1:], v.dtype, sharding=batch_sharding)
           for k, v in packed.features.items()}
  key = jax.eval_shape(lambda: jax.random.key(0))
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    compiled = step.lower(sharding.with_shardings(abstract_state, state_shardings), batch,
                          jax.ShapeDtypeStruct(key.shape, key.dtype, sharding=replicated)
                          ).compile()
  kernels = set(re.findall(r"splash_mha_(fwd|dq|dkv)_segmented", compiled.as_text()))
  assert kernels == {"fwd", "dq", "dkv"}  # Segment ids from the packing, not XLA's path.
