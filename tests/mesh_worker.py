"""Runs a few train steps on several meshes of 8 (fake CPU) devices; prints a JSON report.

Run by tests/test_sharding.py in a subprocess with
XLA_FLAGS=--xla_force_host_platform_device_count=8 (the device count is fixed at JAX start-up).
The report holds, per mesh, the largest difference from the one-device run and how a few
params are actually laid out; the test asserts on it.
"""

import json
import sys

import flax.linen as nn
import jax
import numpy as np

from bert_jax.pretraining import train_program
from bert_jax.pretraining.data.synthetic import random_batch
from bert_jax.runtime import sharding
from bert_jax.runtime import train_state
from configs import tiny

MESHES = {"8x1x1": (8, 1, 1), "2x4x1": (2, 4, 1), "2x2x2": (2, 2, 2)}
# Params whose layout the test checks: (path, shape per device on the 2x2x2 mesh).
WATCHED = ("bert/embeddings/word_embeddings/embedding",
           "bert/encoder/layer/attention/query_kernel",
           "bert/encoder/layer/intermediate/kernel",
           "cls/predictions/output_bias")


def _config():
  config = tiny.get_config()
  config.model.update(vocab_size=128, hidden_size=32, num_hidden_layers=2,
                      num_attention_heads=4, intermediate_size=64, max_position_embeddings=64,
                      dtype="float32")  # Compared to float32 rounding on every mesh.
  config.data.update(max_seq_length=32, max_predictions_per_seq=5)
  config.train.update(batch_size=16, num_warmup_steps=0, learning_rate=1e-3,
                      num_train_steps=10)
  return config


def _flat(tree):
  return {"/".join(str(getattr(k, "key", k)) for k in path): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def run(mesh_shape, devices, steps=3):
  config = _config()
  config.mesh.update(data=mesh_shape[0], fsdp=mesh_shape[1], tensor=mesh_shape[2])
  mesh = sharding.create_mesh(config.mesh, devices)
  rules = sharding.logical_axis_rules(config)
  batch = random_batch(16, 32, 5, vocab_size=128, seed=0)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    program = train_program.build_program(config, mesh, rules, next_sentence_prediction=True)
    shapes = train_program.dummy_batch(1, 32, 5)
    state = jax.jit(
        lambda rng: train_state.create_train_state(rng, program.model, program.tx, shapes),
        out_shardings=program.state_shardings)(jax.random.key(0))
    initial = {k: np.asarray(v) for k, v in _flat(state.params).items()}
    history = []
    for _ in range(steps):
      state, metrics = program.train_step(
          state, jax.device_put(batch, program.batch_sharding), jax.random.key(1))
      history.append({k: float(v) for k, v in metrics.items()})
  params = _flat(state.params)
  mu = _flat(state.opt_state)
  layout = {name: {"spec": str(params[name].sharding.spec),
                   "shard_shape": list(params[name].addressable_shards[0].data.shape)}
            for name in WATCHED}
  layout["adam_mu_of_query_kernel"] = {
      "spec": str(next(v.sharding.spec for k, v in mu.items()
                       if k.endswith("mu/bert/encoder/layer/attention/query_kernel")))}
  params = {k: np.asarray(v) for k, v in params.items()}
  # How far the params moved: the differences between meshes must be far smaller than this.
  layout["max_update"] = max(float(np.max(np.abs(params[k] - initial[k]))) for k in params)
  return history, params, layout


def main():
  devices = jax.devices()
  assert len(devices) == 8, devices
  reference_history, reference_params, _ = run((1, 1, 1), devices[:1])
  report = {"reference_loss": [h["loss"] for h in reference_history]}
  for name, shape in MESHES.items():
    history, params, layout = run(shape, devices)
    report[name] = {
        "loss": [h["loss"] for h in history],
        "max_metric_rel_diff": max(
            abs(h[k] - r[k]) / max(abs(r[k]), 1e-6)
            for h, r in zip(history, reference_history) for k in r),
        "max_param_abs_diff": max(float(np.max(np.abs(params[k] - reference_params[k])))
                                  for k in params),
        "layout": layout,
    }
  json.dump(report, sys.stdout)


if __name__ == "__main__":
  main()
