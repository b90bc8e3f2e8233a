"""The MLM loss counts masked positions only; the NSP loss and accuracies are exact."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bert_jax.model import losses


def _batch(rng):
  return {
      "masked_lm_ids": rng.integers(0, 11, (2, 4)).astype(np.int32),
      "masked_lm_weights": np.array([[1, 1, 0, 0], [1, 0, 0, 0]], np.float32),
      "next_sentence_labels": np.array([0, 1], np.int32),
  }


def test_mlm_loss_ignores_padding_predictions():
  rng = np.random.default_rng(0)
  batch = _batch(rng)
  logits = rng.normal(size=(2, 4, 11)).astype(np.float32)
  nsp_logits = rng.normal(size=(2, 2)).astype(np.float32)
  loss, sums = losses.pretraining_loss(logits, nsp_logits, batch)
  changed = logits.copy()
  changed[0, 2:] += 100 * rng.normal(size=(2, 11))  # Weight-0 positions only.
  changed[1, 1:] -= 50
  loss2, sums2 = losses.pretraining_loss(changed, nsp_logits, batch)
  np.testing.assert_allclose(loss, loss2, rtol=1e-6)
  assert sums["mlm_correct"] == sums2["mlm_correct"]
  # And the value is the mean cross-entropy over the 3 real predictions, plus NSP's mean.
  log_probs = jax.nn.log_softmax(logits)
  ids = batch["masked_lm_ids"]
  mlm = -(log_probs[0, 0, ids[0, 0]] + log_probs[0, 1, ids[0, 1]] + log_probs[1, 0, ids[1, 0]]) / 3
  nsp_log_probs = jax.nn.log_softmax(nsp_logits)
  nsp = -(nsp_log_probs[0, 0] + nsp_log_probs[1, 1]) / 2
  np.testing.assert_allclose(loss, mlm + nsp, rtol=1e-4)
  assert sums["mlm_weight"] == 3 and sums["nsp_count"] == 2


def test_accuracies_count_real_positions():
  batch = {
      "masked_lm_ids": np.array([[3, 4, 5]], np.int32),
      "masked_lm_weights": np.array([[1, 1, 0]], np.float32),
      "next_sentence_labels": np.array([1], np.int32),
  }
  logits = np.zeros((1, 3, 8), np.float32)
  logits[0, 0, 3] = 5  # Right.
  logits[0, 1, 2] = 5  # Wrong.
  logits[0, 2, 5] = 5  # Right but padding: not counted.
  _, sums = losses.pretraining_loss(logits, np.array([[0.0, 1.0]], np.float32), batch)
  summary = losses.summarize(jax.device_get(sums))
  assert summary["mlm_accuracy"] == 0.5
  assert summary["nsp_accuracy"] == 1.0


def test_mlm_loss_and_gradient_match_optax_cross_entropy():
  # The scatter-free form must be the same function as the usual one, value and gradient,
  # including far from zero where an unstabilised log-sum-exp would overflow.
  rng = np.random.default_rng(1)
  logits = (rng.normal(size=(3, 5, 50)) * 30 + 200).astype(np.float32)
  ids = rng.integers(0, 50, (3, 5)).astype(np.int32)
  ids[:, :2] = np.argmax(logits[:, :2], -1)  # Some right predictions for the accuracy.
  weights = (rng.random((3, 5)) > 0.3).astype(np.float32)

  def ours(x):
    return losses.masked_lm_loss(x, ids, weights)[0]

  def reference(x):
    return jnp.sum(optax.softmax_cross_entropy_with_integer_labels(x, ids) * weights)

  np.testing.assert_allclose(ours(logits), reference(logits), rtol=1e-5)
  np.testing.assert_allclose(jax.grad(ours)(logits), jax.grad(reference)(logits), atol=1e-6)
  correct = losses.masked_lm_loss(logits, ids, weights)[1]
  expected = np.sum((np.argmax(logits, -1) == ids) * weights)
  assert expected >= 2 and correct == expected


def test_padding_rows_weigh_nothing_in_the_metrics():
  logits = jnp.zeros((3, 4, 7)).at[:, :, 2].set(5.0)  # [batch, predictions, vocab]
  nsp_logits = jnp.array([[2.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
  batch = {"masked_lm_ids": jnp.full((3, 4), 2), "masked_lm_weights": jnp.array(
      [[1.0] * 4, [1.0, 1.0, 0.0, 0.0], [0.0] * 4]),
           "next_sentence_labels": jnp.array([0, 1, 1]),
           "example_weights": jnp.array([1.0, 1.0, 0.0])}
  _, sums = losses.pretraining_loss(logits, nsp_logits, batch)
  # The third row is padding: its NSP answer (right) and its predictions do not count.
  assert float(sums["nsp_count"]) == 2 and float(sums["nsp_correct"]) == 1
  assert float(sums["mlm_weight"]) == 6 and float(sums["mlm_correct"]) == 6
