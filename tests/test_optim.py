"""BERT's weight-decay mask, the warmup / linear-decay schedule, and LAMB."""


import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from bert_jax import errors
from bert_jax.config import validation
from bert_jax.model import modeling
from bert_jax.pretraining import train_program
from bert_jax.pretraining.data.synthetic import random_batch
from bert_jax.runtime import optim
from bert_jax.runtime import sharding
from bert_jax.runtime import train_state
from configs import large_lamb
from configs import tiny
from test_train import train_on_one_batch


def _train_config(**overrides):
  config = ml_collections.ConfigDict(dict(
      learning_rate=1e-3, num_warmup_steps=10, num_train_steps=110, weight_decay=0.01,
      adam_b1=0.9, adam_b2=0.999, adam_epsilon=1e-6, max_grad_norm=1.0,
      schedule="warmup_then_decay", adam_bias_correction=True))
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


# ---- LAMB ----

def _lamb_reference(params, grads_per_step, lr, b1, b2, eps, wd, decays, stacked=()):
  """LAMB by hand (numpy): Adam with bias correction, + wd * w, trust ratio, times -lr.

  `decays` names the leaves that get the decay and the trust ratio; `stacked` those whose
  leading axis holds layers, each with its own ratio.
  """
  params = {k: np.array(v, np.float64) for k, v in params.items()}
  mu = {k: np.zeros_like(v) for k, v in params.items()}
  nu = {k: np.zeros_like(v) for k, v in params.items()}
  for t, grads in enumerate(grads_per_step, start=1):
    for k, w in params.items():
      mu[k] = b1 * mu[k] + (1 - b1) * grads[k]
      nu[k] = b2 * nu[k] + (1 - b2) * grads[k] ** 2
      update = (mu[k] / (1 - b1 ** t)) / (np.sqrt(nu[k] / (1 - b2 ** t)) + eps)
      if k in decays:
        update = update + wd * w
        slices = list(range(w.shape[0])) if k in stacked else [slice(None)]
        for s in slices:
          update[s] = update[s] * np.linalg.norm(w[s]) / np.linalg.norm(update[s])
      params[k] = w - lr * update
  return params


def _lamb_steps(params, grads_per_step, learning_rate, b1, b2, eps, weight_decay):
  tx = optim.lamb(learning_rate, optax.scale_by_adam(b1=b1, b2=b2, eps=eps), weight_decay)
  params = jax.tree.map(jnp.asarray, params)
  state = tx.init(params)
  for grads in grads_per_step:
    updates, state = tx.update(jax.tree.map(jnp.asarray, grads), state, params)
    params = optax.apply_updates(params, updates)
  return jax.tree.map(np.asarray, params)


_HYPER = dict(learning_rate=0.1, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.01)


def test_lamb_matches_a_hand_computation():
  rng = np.random.default_rng(0)
  params = {"kernel": rng.normal(size=(3, 4)), "bias": rng.normal(size=(4,))}
  grads = [{k: rng.normal(size=v.shape) for k, v in params.items()} for _ in range(2)]
  got = _lamb_steps(params, grads, **_HYPER)
  want = _lamb_reference(params, grads, lr=0.1, b1=0.9, b2=0.999, eps=1e-6, wd=0.01,
                         decays={"kernel"})
  for name in params:
    np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6)
  # The trust ratio did something: plain Adam + decay would land elsewhere.
  adam = _lamb_reference(params, grads[:1], lr=0.1, b1=0.9, b2=0.999, eps=1e-6, wd=0.0,
                         decays=set())
  assert np.abs(_lamb_steps(params, grads[:1], **_HYPER)["kernel"] - adam["kernel"]).max() > 1e-3


def test_lamb_leaves_layer_norm_and_biases_to_adam_alone():
  """No decay and no trust ratio: the step is -lr * Adam's, whatever the weights' norm."""
  rng = np.random.default_rng(1)
  params = {"LayerNorm": {"scale": 100.0 * np.ones(4)}, "output_bias": 50.0 * np.ones(4),
            "kernel": 100.0 * np.ones((2, 4))}
  grads = jax.tree.map(lambda v: rng.normal(size=v.shape), params)
  got = _lamb_steps(params, [grads], **_HYPER)
  for excluded in (("LayerNorm", "scale"), ("output_bias",)):
    w, g, new = params, grads, got
    for key in excluded:
      w, g, new = w[key], g[key], new[key]
    # One step of bias-corrected Adam is g / (|g| + eps).
    np.testing.assert_allclose(new, w - 0.1 * g / (np.abs(g) + 1e-6), rtol=1e-6)
  # The kernel, by contrast, moves by lr * ||w||: the trust ratio's scale, not Adam's.
  np.testing.assert_allclose(np.linalg.norm(got["kernel"] - params["kernel"]),
                             0.1 * np.linalg.norm(params["kernel"]), rtol=1e-5)


def test_lamb_gives_each_stacked_encoder_layer_its_own_trust_ratio():
  rng = np.random.default_rng(2)
  # Layer 1's weights are 100x layer 0's: one ratio over the stack would be layer 1's.
  kernel = rng.normal(size=(2, 3, 4)) * np.array([1.0, 100.0])[:, None, None]
  params = {"bert": {"encoder": {"layer": {"kernel": kernel}}}}
  grads = [jax.tree.map(lambda v: rng.normal(size=v.shape), params)]
  got = _lamb_steps(params, grads, **_HYPER)["bert"]["encoder"]["layer"]["kernel"]
  want = _lamb_reference({"k": kernel}, [{"k": grads[0]["bert"]["encoder"]["layer"]["kernel"]}],
                         lr=0.1, b1=0.9, b2=0.999, eps=1e-6, wd=0.01, decays={"k"},
                         stacked={"k"})["k"]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  for layer in range(2):  # Each layer moves by lr times its own norm.
    np.testing.assert_allclose(np.linalg.norm(got[layer] - kernel[layer]),
                               0.1 * np.linalg.norm(kernel[layer]), rtol=1e-5)


def test_a_few_lamb_steps_reduce_the_loss():
  config = tiny.get_config()
  config.model.update(vocab_size=128, hidden_size=32, num_hidden_layers=2,
                      num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
  # A LAMB step moves each weight tensor by lr times its norm: a larger rate than AdamW's.
  config.train.update(optimizer="lamb", num_train_steps=40, learning_rate=5e-2,
                      num_warmup_steps=1)
  model = modeling.BertForPreTraining(modeling.BertConfig.from_dict(config.model.to_dict()))
  tx = optim.create_optimizer(config.train)
  batch = random_batch(8, 32, 5, vocab_size=128, seed=0)
  state, losses = train_on_one_batch(model, tx, batch, 40)
  assert int(state.step) == 40
  assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses


def test_lamb_state_gets_shardings_like_the_params():
  """abstract_train_state: each Adam slot sharded as its param, LAMB's masked states too."""
  config = tiny.get_config()
  config.train.optimizer = "lamb"
  config.mesh.update(data=2, fsdp=4, tensor=1)
  model = modeling.BertForPreTraining(modeling.BertConfig.from_dict(config.model.to_dict()))
  tx = optim.create_optimizer(config.train)
  mesh = jax.sharding.AbstractMesh((2, 4, 1), sharding.MESH_AXES)
  rules = sharding.logical_axis_rules(config)
  abstract, shardings = train_state.abstract_train_state(
      model, tx, train_program.dummy_batch(1, 16, 4), jax.eval_shape(lambda: jax.random.key(0)),
      mesh, rules)
  assert jax.tree.structure(abstract.opt_state) == jax.tree.structure(shardings.opt_state)
  flat = {jax.tree_util.keystr(path): leaf for path, leaf in
          jax.tree_util.tree_leaves_with_path(shardings.opt_state)}
  kernel = "['bert']['encoder']['layer']['intermediate']['kernel']"
  slots = [leaf.spec for path, leaf in flat.items() if path.endswith(kernel)]
  assert slots == [jax.sharding.PartitionSpec(None, "fsdp", "tensor")] * 2  # Adam's mu and nu.
  assert all(leaf.spec == jax.sharding.PartitionSpec() for path, leaf in flat.items()
             if "count" in path)


def test_unknown_optimizer_is_a_one_line_error():
  config = tiny.get_config()
  config.train.optimizer = "adafactor"
  with pytest.raises(errors.UserError) as raised:
    validation.validate(config)
  assert str(raised.value) == "train.optimizer='adafactor' is not one of 'adamw', 'lamb'"
  with pytest.raises(errors.UserError, match="train.optimizer='adafactor'"):
    optim.create_optimizer(config.train)
  validation.validate(large_lamb.get_config())


# ---- The original's AdamWeightDecayOptimizer and schedule, written out in numpy ----


def _original_learning_rate(step, peak, warmup, total):
  """google-research/bert's create_optimizer: polynomial decay (power 1, to 0) over all the
  steps from step 0; before warmup ends, peak * step / warmup instead."""
  rate = peak * (1 - min(step, total) / total)
  return peak * step / warmup if warmup and step < warmup else rate


def _clipped_moments(params, grads_per_step, clip, b1, b2):
  """(step, m, v) after each step's gradients, clipped by their global norm, enter Adam's
  moments (numpy float64): what the original's AdamW and apex's LAMB share."""
  m = {k: np.zeros_like(x) for k, x in params.items()}
  v = {k: np.zeros_like(x) for k, x in params.items()}
  for step, grads in enumerate(grads_per_step):
    norm = np.sqrt(sum(np.sum(g ** 2) for g in grads.values()))
    for k, g in grads.items():
      g = g * clip / max(norm, clip)
      m[k] = b1 * m[k] + (1 - b1) * g
      v[k] = b2 * v[k] + (1 - b2) * g * g
    yield step, m, v


def _original_adamw_steps(params, grads_per_step, peak, warmup, total, clip=1.0, b1=0.9,
                          b2=0.999, eps=1e-6, weight_decay=0.01):
  """The original's update, numpy float64: clip by global norm, then m / (sqrt(v) + eps)
  without bias correction, plus the decay (not on LayerNorm params or biases), times the rate."""
  params = dict(params)
  for step, m, v in _clipped_moments(params, grads_per_step, clip, b1, b2):
    rate = _original_learning_rate(step, peak, warmup, total)
    for k in m:
      update = m[k] / (np.sqrt(v[k]) + eps)
      if not (k.endswith("bias") or "LayerNorm" in k):
        update = update + weight_decay * params[k]
      params[k] = params[k] - rate * update
  return params


def test_original_schedule_at_every_step():
  config = _train_config(num_warmup_steps=10, num_train_steps=40, schedule="original")
  schedule = optim.learning_rate_schedule(config)
  for step in range(45):
    np.testing.assert_allclose(float(schedule(step)),  # float32: within 1e-6 relative.
                               _original_learning_rate(step, 1e-3, 10, 40), rtol=1e-6,
                               atol=1e-12)
  # The warmup boundary: the rate drops from peak * 9/10 to peak * (1 - 10/40), not the peak.
  np.testing.assert_allclose([float(schedule(9)), float(schedule(10))], [9e-4, 7.5e-4],
                             rtol=1e-6)
  no_warmup = optim.learning_rate_schedule(_train_config(num_warmup_steps=0, num_train_steps=40,
                                                         schedule="original"))
  np.testing.assert_allclose(float(no_warmup(0)), 1e-3)


def _layer_params_and_grads(seed: int) -> tuple[dict, list[dict]]:
  """A layer's kernel, bias and LayerNorm params (flat names), and 40 steps of random
  gradients, step 3's large enough for clipping to bite."""
  rng = np.random.default_rng(seed)
  params = {"layer/kernel": rng.normal(size=(4, 3)), "layer/bias": rng.normal(size=(3,)),
            "layer/LayerNorm/scale": 1 + rng.normal(size=(3,)) * 0.1,
            "layer/LayerNorm/bias": rng.normal(size=(3,)) * 0.1}
  grads = [{k: rng.normal(size=v.shape) * (5.0 if step == 3 else 0.1)
            for k, v in params.items()} for step in range(40)]
  assert np.sqrt(sum(np.sum(g ** 2) for g in grads[3].values())) > 1.0
  return params, grads


def _nested(flat: dict) -> dict:
  """The flat names as the model's param tree (what the weight-decay mask reads)."""
  return {"layer": {"kernel": flat["layer/kernel"], "bias": flat["layer/bias"],
                    "LayerNorm": {"scale": flat["layer/LayerNorm/scale"],
                                  "bias": flat["layer/LayerNorm/bias"]}}}


def _optimizer_steps(config, params: dict, grads: list[dict]) -> dict:
  """The params tree after create_optimizer(config) takes every step of `grads`, float32."""
  tx = optim.create_optimizer(config)
  tree = _nested({k: jnp.asarray(v, jnp.float32) for k, v in params.items()})
  state = tx.init(tree)
  for step_grads in grads:
    updates, state = tx.update(_nested({k: jnp.asarray(g, jnp.float32)
                                        for k, g in step_grads.items()}), state, tree)
    tree = optax.apply_updates(tree, updates)
  return tree


def _assert_close(tree, expected) -> None:
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), b, rtol=1e-6, atol=1e-7),
               tree, expected)


def test_original_adamw_matches_the_original_formulas():
  params, grads = _layer_params_and_grads(0)
  config = _train_config(learning_rate=1e-3, num_warmup_steps=10, num_train_steps=40,
                         optimizer="adamw", schedule="original", adam_bias_correction=False)
  expected = _nested(_original_adamw_steps(params, grads, 1e-3, 10, 40))
  _assert_close(_optimizer_steps(config, params, grads), expected)
  # Bias correction or the other schedule each move the params measurably.
  for option in (dict(adam_bias_correction=True), dict(schedule="warmup_then_decay")):
    other = _optimizer_steps(_train_config(**{**config.to_dict(), **option}), params, grads)
    moved = max(float(np.max(np.abs(np.asarray(a) - b))) for a, b in
                zip(jax.tree.leaves(other), jax.tree.leaves(expected)))
    assert moved > 1e-4, option


def test_unknown_schedule_is_a_one_line_error():
  config = tiny.get_config()
  config.train.schedule = "cosine"
  with pytest.raises(errors.UserError, match="train.schedule='cosine' is not one of "
                                              "'original', 'warmup_then_decay'"):
    validation.validate(config)


def _fused_lamb_steps(params, grads_per_step, peak, warmup, total, clip=1.0, b1=0.9, b2=0.999,
                      eps=1e-6, weight_decay=0.01):
  """LAMB as apex's FusedLAMB computes it (bias_correction=True, use_nvlamb=False,
  max_grad_norm=1.0), the optimizer of NVIDIA's PyTorch BERT and of MLPerf's BERT submissions,
  in numpy float64, on the original's schedule: clip by global norm; bias-corrected Adam;
  + decay * w and a trust ratio ||w|| / ||update|| (1 where a norm is 0) for the params with
  decay only; times the rate."""
  params = dict(params)
  for step, m, v in _clipped_moments(params, grads_per_step, clip, b1, b2):
    rate, t = _original_learning_rate(step, peak, warmup, total), step + 1
    for k in m:
      update = (m[k] / (1 - b1 ** t)) / (np.sqrt(v[k] / (1 - b2 ** t)) + eps)
      if not (k.endswith("bias") or "LayerNorm" in k):
        update = update + weight_decay * params[k]
        w_norm, u_norm = np.linalg.norm(params[k]), np.linalg.norm(update)
        update = update * (w_norm / u_norm if w_norm > 0 and u_norm > 0 else 1.0)
      params[k] = params[k] - rate * update
  return params


def test_lamb_is_apex_fused_lamb_on_the_original_schedule():
  # configs/large_lamb.py's optimizer: LAMB, bias correction, the original schedule, clipping.
  params, grads = _layer_params_and_grads(1)
  config = _train_config(learning_rate=1e-3, num_warmup_steps=10, num_train_steps=40,
                         optimizer="lamb", schedule="original", adam_bias_correction=True)
  assert (large_lamb.get_config().train.adam_bias_correction,
          large_lamb.get_config().train.schedule) == (True, "original")
  _assert_close(_optimizer_steps(config, params, grads),
                _nested(_fused_lamb_steps(params, grads, 1e-3, 10, 40)))
