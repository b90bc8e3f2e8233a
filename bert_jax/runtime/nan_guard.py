"""A non-finite loss or gradient never reaches the params, nor a saved checkpoint.

In the step (jitted): `keep_if_finite` leaves params and optimizer state as they were when the
loss or the gradient norm is NaN/inf, and the step's metrics are zeroed except `nonfinite`, so
nothing downstream sees a NaN. On the host, `NonFiniteGuard` looks at those flags whenever the
loop fetches metrics anyway (log lines) and before every checkpoint, and applies
`train.nan_policy`:

- 'stop': a one-line error naming the first bad step; the last checkpoint is left as it was.
- 'skip': that step's update is dropped (its batch is not retried); training goes on.
- 'rollback': the state goes back to the latest checkpoint and training goes on with the data
  after the bad batch (the batches since that checkpoint are not repeated). After
  MAX_ROLLBACKS rollbacks in one run it stops as 'stop' does: a run that keeps diverging needs
  a person (a lower learning rate, or a look at the data).
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import errors
from bert_jax.runtime import report

POLICIES = ("stop", "skip", "rollback")
MAX_ROLLBACKS = 3


def keep_if_finite(finite: jax.Array, new: Any, old: Any) -> Any:
  """`new` where `finite` (a scalar bool), else `old`, leaf by leaf."""
  return jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)


def poison(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The batch with NaN weights (pre-training's prediction weights, fine-tuning's example
  weights): a NaN loss and NaN gradients, as corrupt input would give. For
  `train.debug_nan_steps`, which tests the guard end to end."""
  if "masked_lm_weights" in batch:
    return {**batch, "masked_lm_weights": np.full_like(batch["masked_lm_weights"], np.nan)}
  # Fine-tuning batches carry weights: [rows], or [rows, slots] when packed.
  return {**batch, "weights": np.full_like(batch["weights"], np.nan)}


def parse_steps(text: str) -> frozenset[int]:
  """'3,7' -> {3, 7}; '' -> {}."""
  try:
    return frozenset(int(s) for s in text.split(",") if s.strip())
  except ValueError as e:
    raise errors.UserError(f"train.debug_nan_steps={text!r} is not a comma-separated list of "
                           "steps") from e


class NonFiniteGuard:
  """Host side: finds the first non-finite step among fetched metrics and applies the policy."""

  def __init__(self, policy: str, debug_nan_steps: str = ""):
    if policy not in POLICIES:
      raise errors.UserError(f"train.nan_policy={policy!r} is not one of {', '.join(POLICIES)}")
    self.policy = policy
    self.rollbacks = 0
    self.skipped = 0
    self._to_poison = set(parse_steps(debug_nan_steps))

  def maybe_poison(self, step: int, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Poisons the batch of a debug step, once (a rolled-back run goes on with clean data)."""
    if step in self._to_poison:
      self._to_poison.discard(step)
      return poison(batch)
    return batch

  def check(self, steps: list[int], nonfinite: list[Any]) -> int | None:
    """Applies the policy to the steps fetched since the last check.

    Args:
      steps: The step numbers, in order.
      nonfinite: Each step's `nonfinite` metric (device scalars; fetching them syncs).

    Returns:
      The step to roll back from under 'rollback', else None.

    Raises:
      errors.UserError: Under 'stop' (or too many rollbacks), naming the step.
    """
    flags = np.asarray(jax.device_get(nonfinite)) > 0
    if not flags.any():
      return None
    bad = [step for step, flag in zip(steps, flags) if flag]
    if self.policy == "skip":
      self.skipped += len(bad)
      report.line(f"Non-finite loss or gradient at step(s) {', '.join(map(str, bad))}: update(s) "
                  f"skipped ({self.skipped} so far; train.nan_policy='skip')")
      return None
    if self.policy == "rollback" and self.rollbacks < MAX_ROLLBACKS:
      self.rollbacks += 1
      return bad[0]
    raise errors.UserError(
        f"non-finite loss or gradient at step {bad[0]} (train.nan_policy={self.policy!r}"
        f"{', after %d rollbacks' % self.rollbacks if self.policy == 'rollback' else ''}); "
        "the update was not applied and no checkpoint holds it: lower train.learning_rate, or "
        "check the data, then run the same command to resume from the last checkpoint")
