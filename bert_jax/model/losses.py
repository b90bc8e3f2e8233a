"""Pre-training losses and accuracies: pure jnp, float32, on the masked positions only."""

import jax
import jax.numpy as jnp
import optax


def masked_lm_loss(mlm_logits: jax.Array, masked_lm_ids: jax.Array,
                   masked_lm_weights: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Cross-entropy and accuracy summed over real masked positions (weight 1), padding ignored.

  Written for the vocabulary-sized work: the label's logit is picked by a one-hot select,
  not a gather, so its gradient is an elementwise select fused into the softmax's rather than
  a scatter into a zeroed [.., vocab] buffer; and the accuracy reuses the max that the stable
  log-sum-exp needs instead of a separate (value, index) argmax reduction. A prediction is
  correct when the label's logit is the maximum (a float tie, which argmax would break by
  index, counts as correct).

  Args:
    mlm_logits: [batch, predictions, vocab] logits at the gathered masked positions.
    masked_lm_ids: [batch, predictions] the original token ids there.
    masked_lm_weights: [batch, predictions] 1.0 for a real prediction, 0.0 for padding.

  Returns:
    (sum of weighted losses, sum of weighted correct predictions, sum of weights).
  """
  logits = mlm_logits.astype(jnp.float32)
  is_label = jnp.arange(logits.shape[-1]) == masked_lm_ids[..., None]  # [batch, preds, vocab]
  label_logit = jnp.sum(jnp.where(is_label, logits, 0.0), axis=-1)  # [batch, predictions]
  max_logit = jax.lax.stop_gradient(jnp.max(logits, axis=-1))
  log_normalizer = max_logit + jnp.log(
      jnp.sum(jnp.exp(logits - max_logit[..., None]), axis=-1))
  weights = masked_lm_weights.astype(jnp.float32)
  loss_sum = jnp.sum((log_normalizer - label_logit) * weights)
  correct_sum = jnp.sum((label_logit >= max_logit) * weights)
  return loss_sum, correct_sum, jnp.sum(weights)


def next_sentence_loss(nsp_logits: jax.Array, next_sentence_labels: jax.Array,
                       weights: jax.Array | None = None) -> jax.Array:
  """Summed NSP cross-entropy over the batch. nsp_logits [batch, 2], labels and weights
  [batch] (None: every row counts)."""
  losses = optax.softmax_cross_entropy_with_integer_labels(nsp_logits.astype(jnp.float32),
                                                           next_sentence_labels)
  return jnp.sum(losses if weights is None else losses * weights)


def weighted_correct(logits: jax.Array, labels: jax.Array, weights: jax.Array) -> jax.Array:
  """Number of (weighted) positions whose argmax equals the label."""
  correct = jnp.argmax(logits, axis=-1) == labels
  return jnp.sum(correct * weights.astype(jnp.float32))


def loss_normalizers(batch: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
  """What the summed MLM and NSP losses of `batch` are divided by to make the mean loss.

  The original divides the MLM loss by (sum of weights + 1e-5) so that a batch with no
  prediction is finite.
  """
  mlm = jnp.sum(batch["masked_lm_weights"].astype(jnp.float32)) + 1e-5
  nsp = jnp.asarray(batch["next_sentence_labels"].shape[0], jnp.float32)
  return mlm, nsp


def pretraining_loss(mlm_logits: jax.Array, nsp_logits: jax.Array,
                     batch: dict[str, jax.Array], next_sentence_prediction: bool = True,
                     normalizers: tuple[jax.Array, jax.Array] | None = None
                     ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The original's objective: mean MLM loss over real predictions + mean NSP loss.

  With next_sentence_prediction=False (RoBERTa's recipe: packed full sentences, no pairs) the
  loss is MLM only; NSP metrics are still computed but mean nothing.

  Args:
    normalizers: `loss_normalizers` of the whole batch when `batch` is one micro-batch of it:
      then the micro-batches' losses (and gradients) add up to exactly the whole batch's.
      Default: this batch's own.

  Returns:
    (scalar loss, sums): sums of losses, correct counts and weights, so that metrics from
    several batches or devices add up exactly.
  """
  mlm_loss_sum, mlm_correct, mlm_weight = masked_lm_loss(
      mlm_logits, batch["masked_lm_ids"], batch["masked_lm_weights"])
  # Eval batches are padded (inputs.eval_batches): their padding rows weigh 0.
  example_weights = batch.get("example_weights")
  if example_weights is None:
    example_weights = jnp.ones(batch["next_sentence_labels"].shape, jnp.float32)
  nsp_loss_sum = next_sentence_loss(nsp_logits, batch["next_sentence_labels"], example_weights)
  nsp_count = jnp.sum(example_weights)
  mlm_normalizer, nsp_normalizer = normalizers or loss_normalizers(batch)
  loss = mlm_loss_sum / mlm_normalizer
  if next_sentence_prediction:
    loss += nsp_loss_sum / nsp_normalizer
  sums = {
      "mlm_loss": mlm_loss_sum,
      "mlm_correct": mlm_correct,
      "mlm_weight": mlm_weight,
      "nsp_loss": nsp_loss_sum,
      "nsp_correct": weighted_correct(nsp_logits, batch["next_sentence_labels"],
                                      example_weights),
      "nsp_count": nsp_count,
  }
  return loss, sums


def summarize(sums: dict[str, float], next_sentence_prediction: bool = True) -> dict[str, float]:
  """Mean losses and accuracies from summed metrics (host side).

  Without next-sentence prediction there are no nsp_* entries: the NSP head is not trained
  and its labels are all 0, so its 'accuracy' would be noise that reads like a result.
  """
  mlm_weight = max(float(sums["mlm_weight"]), 1e-5)
  mlm_loss = float(sums["mlm_loss"]) / mlm_weight
  summary = {"loss": mlm_loss, "mlm_loss": mlm_loss,
             "mlm_accuracy": float(sums["mlm_correct"]) / mlm_weight}
  if next_sentence_prediction:
    nsp_count = max(float(sums["nsp_count"]), 1.0)
    summary["nsp_loss"] = float(sums["nsp_loss"]) / nsp_count
    summary["nsp_accuracy"] = float(sums["nsp_correct"]) / nsp_count
    summary["loss"] += summary["nsp_loss"]
  return summary
