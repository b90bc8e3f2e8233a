"""BERT's weight-decay mask and the warmup / linear-decay schedule."""

import ml_collections
import numpy as np

from bert_jax import optim


def _train_config(**overrides):
  config = ml_collections.ConfigDict(dict(
      learning_rate=1e-3, num_warmup_steps=10, num_train_steps=110, weight_decay=0.01,
      adam_b1=0.9, adam_b2=0.999, adam_epsilon=1e-6, max_grad_norm=1.0))
  config.update(overrides)
  return config


def test_schedule_warms_up_then_decays_to_zero():
  schedule = optim.learning_rate_schedule(_train_config())
  np.testing.assert_allclose(
      [schedule(0), schedule(5), schedule(10), schedule(60), schedule(110)],
      [0.0, 5e-4, 1e-3, 5e-4, 0.0], atol=1e-9)


def test_no_decay_on_layer_norm_and_biases():
  params = {
      "bert": {"embeddings": {"LayerNorm": {"scale": 1.0, "bias": 1.0},
                              "word_embeddings": {"embedding": 1.0}},
               "encoder": {"layer": {"intermediate": {"kernel": 1.0, "bias": 1.0},
                                     "attention": {"query_kernel": 1.0, "query_bias": 1.0}}}},
      "cls": {"predictions": {"output_bias": 1.0, "transform_LayerNorm": {"scale": 1.0}}},
  }
  mask = optim.weight_decay_mask(params)
  assert mask["bert"]["embeddings"]["word_embeddings"]["embedding"]
  assert mask["bert"]["encoder"]["layer"]["intermediate"]["kernel"]
  assert not mask["bert"]["encoder"]["layer"]["intermediate"]["bias"]
  assert mask["bert"]["encoder"]["layer"]["attention"]["query_kernel"]
  assert not mask["bert"]["encoder"]["layer"]["attention"]["query_bias"]
  assert not mask["bert"]["embeddings"]["LayerNorm"]["scale"]
  assert not mask["bert"]["embeddings"]["LayerNorm"]["bias"]
  assert not mask["cls"]["predictions"]["output_bias"]
  assert not mask["cls"]["predictions"]["transform_LayerNorm"]["scale"]
