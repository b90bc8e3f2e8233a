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


def _lamb_steps(params, grads_per_step, **hyper):
  tx = optim.lamb(**hyper)
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
