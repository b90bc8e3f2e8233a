"""encode.embed: what each embedding is, and that padding does not reach any of them."""

import functools

import jax
import numpy as np
import pytest

from bert_jax.finetuning import encode
from bert_jax.model import modeling

CONFIG = modeling.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                             num_attention_heads=2, intermediate_size=64,
                             max_position_embeddings=16)
MODEL = modeling.BertModel(CONFIG)
BATCH, LENGTH = 3, 12
LENGTHS = (12, 7, 3)  # Real tokens of each row; the rest is padding.


def _batch(seed: int = 0, pad_id: int | None = 0) -> dict[str, np.ndarray]:
  """Padded positions hold `pad_id`, or random ids when it is None."""
  rng = np.random.default_rng(seed)
  input_mask = (np.arange(LENGTH)[None] < np.array(LENGTHS)[:, None]).astype(np.int32)
  input_ids = rng.integers(5, CONFIG.vocab_size, (BATCH, LENGTH)).astype(np.int32)
  if pad_id is not None:
    input_ids = np.where(input_mask == 1, input_ids, pad_id).astype(np.int32)
  segment_ids = ((np.arange(LENGTH)[None] >= 4) * input_mask).astype(np.int32)
  return {"input_ids": input_ids, "segment_ids": segment_ids, "input_mask": input_mask}


@pytest.fixture(scope="module")
def params():
  batch = _batch()
  return MODEL.init(jax.random.key(0), batch["input_ids"], batch["segment_ids"],
                    batch["input_mask"])["params"]


@pytest.fixture(scope="module")
def embed_fn():
  return jax.jit(functools.partial(encode.embed, model=MODEL))


def test_embeddings_are_the_encoder_outputs(params, embed_fn):
  batch = _batch()
  embeddings = embed_fn(params, batch)
  sequence_output, pooled_output = MODEL.apply(
      {"params": params}, batch["input_ids"], batch["segment_ids"], batch["input_mask"])
  sequence_output = np.asarray(sequence_output)
  for name in ("cls", "pooled", "mean"):
    assert embeddings[name].shape == (BATCH, CONFIG.hidden_size)
    assert embeddings[name].dtype == np.float32
  np.testing.assert_allclose(embeddings["cls"], sequence_output[:, 0], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(embeddings["pooled"], pooled_output, rtol=1e-5, atol=1e-6)
  expected_mean = np.stack([sequence_output[row, :length].mean(axis=0)
                            for row, length in enumerate(LENGTHS)])
  np.testing.assert_allclose(embeddings["mean"], expected_mean, rtol=1e-5, atol=1e-6)


def test_padding_ids_change_nothing(params, embed_fn):
  padded_with_zeros = embed_fn(params, _batch(pad_id=0))
  padded_with_noise = embed_fn(params, _batch(pad_id=None))
  for name in ("cls", "pooled", "mean"):
    np.testing.assert_allclose(padded_with_noise[name], padded_with_zeros[name],
                               rtol=1e-5, atol=1e-6, err_msg=name)

