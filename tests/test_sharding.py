"""Mesh shapes, logical rules, and train steps on meshes of 8 (fake) CPU devices vs one device."""

import json
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from bert_jax import errors
from bert_jax.runtime import sharding
from configs import base
from test_train import REPO


def _mesh(**sizes):
  return ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1, **sizes})


def test_mesh_shape_fills_the_minus_one_axis():
  assert sharding.mesh_shape(_mesh(), 8) == (8, 1, 1)
  assert sharding.mesh_shape(_mesh(fsdp=2, tensor=2), 8) == (2, 2, 2)
  assert sharding.mesh_shape(_mesh(data=1, fsdp=-1), 4) == (1, 4, 1)


@pytest.mark.parametrize("sizes, message", [
    (dict(data=-1, fsdp=-1), "at most one"),
    (dict(tensor=3), "do not divide"),
    (dict(data=2, fsdp=2), "but there are 8 devices"),
    (dict(tensor=0), "mesh.tensor=0"),
])
def test_bad_meshes_name_the_field(sizes, message):
  with pytest.raises(errors.UserError, match=message):
    sharding.mesh_shape(_mesh(**sizes), 8)


def test_rules_reject_unknown_axes():
  config = base.get_config()
  assert dict(sharding.logical_axis_rules(config))["batch"] == ("data", "fsdp")
  config.logical_axis_rules = [("embedding", "fsdp")]
  with pytest.raises(errors.UserError, match="unknown logical axis 'embedding'"):
    sharding.logical_axis_rules(config)
  config.logical_axis_rules = [("embed", "model")]
  with pytest.raises(errors.UserError, match="unknown mesh axis 'model'"):
    sharding.logical_axis_rules(config)


def test_meshes_give_the_one_device_numbers_and_shard_params_as_the_rules_say():
  """3 steps (dropout on) on meshes (8,1,1), (2,4,1), (2,2,2) vs the same steps on one device.

  Tolerance: sharding changes only the order of float32 sums, so metrics agree to 1e-5
  relative and params to 1e-5 absolute, while the steps move the params by ~3e-3.
  """
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
         "TF_CPP_MIN_LOG_LEVEL": "3",
         "PYTHONPATH": os.pathsep.join([REPO, os.path.join(REPO, "tests")])}
  result = subprocess.run([sys.executable, os.path.join(REPO, "tests", "mesh_worker.py")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout)
  for name in ("8x1x1", "2x4x1", "2x2x2"):
    mesh = report[name]
    assert mesh["max_metric_rel_diff"] < 1e-5, (name, mesh["loss"], report["reference_loss"])
    assert mesh["max_param_abs_diff"] < 1e-5, name
    assert mesh["layout"]["max_update"] > 1e-3, name
  # On (data=2, fsdp=2, tensor=2): vocab/heads/mlp split over 'tensor', embed over 'fsdp'.
  layout = report["2x2x2"]["layout"]
  assert layout["bert/embeddings/word_embeddings/embedding"] == {
      "spec": "P('tensor', 'fsdp')", "shard_shape": [64, 16]}
  assert layout["bert/encoder/layer/attention/query_kernel"] == {
      "spec": "P(None, 'fsdp', 'tensor', None)", "shard_shape": [2, 16, 2, 8]}
  assert layout["bert/encoder/layer/intermediate/kernel"] == {
      "spec": "P(None, 'fsdp', 'tensor')", "shard_shape": [2, 16, 32]}
  assert layout["cls/predictions/output_bias"]["shard_shape"] == [64]
  assert layout["adam_mu_of_query_kernel"]["spec"] == "P(None, 'fsdp', 'tensor', None)"
  # Pure data parallelism keeps whole params on every device.
  assert report["8x1x1"]["layout"]["bert/encoder/layer/intermediate/kernel"]["shard_shape"] == [
      2, 32, 64]


def test_params_of_another_architecture_do_not_fit_in_one_line():
  mesh = sharding.create_mesh(ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1}))
  shardings = {"kernel": sharding.replicated(mesh)}
  placed = sharding.place({"kernel": np.ones((2, 3), np.float32)}, shardings, "/ckpt")
  assert placed["kernel"].sharding == shardings["kernel"]
  with pytest.raises(errors.UserError, match="^/ckpt: its params do not fit the model or the "
                                             "mesh: "):
    sharding.place({"kernel": np.ones(2), "bias": np.ones(2)}, shardings, "/ckpt")
