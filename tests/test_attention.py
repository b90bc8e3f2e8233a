"""model.attention: the XLA path, the splash kernel (Pallas interpreter on CPU), the checks.

cuDNN needs an NVIDIA GPU: on CPU only its mask-to-lengths conversion and its checks are
tested. Splash runs here in the Pallas interpreter and is compiled for a TPU slice (libtpu).
"""

import dataclasses
import functools
import os
import re
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import errors
from bert_jax.config import validation
from bert_jax.model import attention
from bert_jax.model import modeling
from configs import tiny

os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # As test_aot.py: compile only.
_SPLASH_ATTENTION = attention.splash_attention  # Before any test replaces it.
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _inputs(batch=2, length=16, heads=2, head_dim=64, dtype=jnp.float32, seed=0):
  """q, k, v [batch, length, heads, head_dim] and a prefix mask [batch, 1, 1, length]."""
  keys = jax.random.split(jax.random.key(seed), 3)
  query, key, value = (jax.random.normal(k, (batch, length, heads, head_dim), dtype)
                       for k in keys)
  lengths = np.linspace(length, 3, batch).astype(int)  # The first row has no padding.
  mask = (np.arange(length)[None] < lengths[:, None])[:, None, None, :]
  return query, key, value, jnp.asarray(mask), lengths


def _numpy_attention(query, key, value, mask):
  """Softmax attention by hand, float64: padding keys get no weight."""
  query, key, value = (np.asarray(x, np.float64) for x in (query, key, value))
  scores = np.einsum("bqhd,bkhd->bhqk", query, key) / np.sqrt(query.shape[-1])
  scores = np.where(np.asarray(mask), scores, -np.inf)
  probs = np.exp(scores - scores.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  return np.einsum("bhqk,bkhd->bqhd", probs, value)  # [batch, length, heads, head_dim]


def _real(x, lengths):
  """The real (unpadded) query positions of each row, concatenated."""
  return np.concatenate([np.asarray(x[i, :n], np.float32) for i, n in enumerate(lengths)])


def _tiny_model_config(**overrides):
  values = dict(vocab_size=64, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                intermediate_size=128, max_position_embeddings=32)
  return modeling.BertConfig(**{**values, **overrides})


def _batch(length=32):
  rng = np.random.default_rng(0)
  input_mask = (np.arange(length)[None] < np.array([[length], [20]])).astype(np.int32)
  input_ids = rng.integers(1, 64, (2, length)).astype(np.int32) * input_mask
  return input_ids, np.zeros_like(input_ids), input_mask


# ---- 'xla': today's path ----

def test_xla_matches_hand_attention():
  query, key, value, mask, _ = _inputs()
  context = jax.nn.dot_product_attention(query, key, value, mask=mask)
  np.testing.assert_allclose(context, _numpy_attention(query, key, value, mask),
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("deterministic", [True, False])
def test_xla_self_attention_matches_hand_attention(deterministic):
  """BertSelfAttention's two 'xla' paths: dot_product_attention, and the explicit softmax that
  training with attention dropout takes (here at a rate of 1e-9: it drops nothing)."""
  model_config = _tiny_model_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=1e-9)
  layer = modeling.BertSelfAttention(model_config, deterministic)
  hidden = jax.random.normal(jax.random.key(1), (2, 32, 128))  # [batch, length, embed]
  input_mask = _batch()[2]  # The ids of unpacked rows: 1 real, 0 padding.
  mask = jnp.asarray(input_mask, bool)[:, None, None, :]
  params = layer.init(jax.random.key(0), hidden, input_mask)["params"]
  got = layer.apply({"params": params}, hidden, input_mask, rngs={"dropout": jax.random.key(2)})

  p = jax.tree.map(lambda x: np.asarray(x, np.float64), nn.meta.unbox(params))
  x = np.asarray(hidden, np.float64)
  q, k, v = (np.einsum("ble,ehd->blhd", x, p[f"{n}_kernel"]) + p[f"{n}_bias"]
             for n in ("query", "key", "value"))
  context = _numpy_attention(q, k, v, mask)  # [batch, length, heads, head_dim]
  out = np.einsum("blhd,hde->ble", context, p["output_kernel"]) + p["output_bias"] + x
  mean, var = out.mean(-1, keepdims=True), out.var(-1, keepdims=True)
  layer_norm = p["LayerNorm"]
  want = (out - mean) / np.sqrt(var + 1e-12) * layer_norm["scale"] + layer_norm["bias"]
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_xla_model_unchanged_by_the_field():
  """attention='xla' is the default and the code path of before: bit-identical outputs."""
  model_config = _tiny_model_config()
  assert model_config.attention == "xla"
  model = modeling.BertModel(model_config)
  inputs = _batch()
  params = model.init(jax.random.key(0), *inputs)
  explicit = modeling.BertModel(_tiny_model_config(attention="xla"))
  for a, b in zip(model.apply(params, *inputs), explicit.apply(params, *inputs)):
    np.testing.assert_array_equal(a, b)


def test_cudnn_key_lengths_are_the_mask():
  """cuDNN gets the padding as key lengths: the same attention as the boolean mask (on XLA)."""
  query, key, value, mask, lengths = _inputs()
  ids = mask[:, 0, 0, :].astype(jnp.int32)  # [batch, length]
  np.testing.assert_array_equal(attention.key_lengths(ids), lengths)
  by_lengths = jax.nn.dot_product_attention(
      query, key, value, key_value_seq_lengths=attention.key_lengths(ids), implementation="xla")
  np.testing.assert_allclose(by_lengths, jax.nn.dot_product_attention(query, key, value,
                                                                      mask=mask), atol=1e-6)


# ---- 'splash' in the Pallas interpreter ----

@pytest.mark.parametrize("length", [16, 128])
def test_splash_matches_xla(length):
  """Real queries match in float32; padded positions (length 16 -> 128) are cut off again."""
  query, key, value, mask, lengths = _inputs(length=length)
  context = attention.splash_attention(query, key, value, mask[:, 0, 0, :], interpret=True)
  assert context.shape == query.shape
  expected = jax.nn.dot_product_attention(query, key, value, mask=mask)
  np.testing.assert_allclose(_real(context, lengths), _real(expected, lengths),
                             rtol=1e-5, atol=1e-5)


def test_splash_gradients_match_xla_in_bfloat16():
  """The backward kernels (dq, dk, dv) too, within bfloat16 rounding."""
  query, key, value, mask, lengths = _inputs(length=128, dtype=jnp.bfloat16)
  # Only the real queries' outputs count, as in the model (nothing reads padded positions).
  weights = jnp.asarray(mask[:, 0, 0, :, None, None], jnp.float32)

  def loss(fn, q, k, v):
    return jnp.sum(fn(q, k, v, mask).astype(jnp.float32) * weights)
  splash_fn = lambda q, k, v, m: attention.splash_attention(q, k, v, m[:, 0, 0, :],
                                                           interpret=True)
  xla_fn = lambda q, k, v, m: jax.nn.dot_product_attention(q, k, v, mask=m)
  got = jax.grad(lambda *a: loss(splash_fn, *a), argnums=(0, 1, 2))(query, key, value)
  want = jax.grad(lambda *a: loss(xla_fn, *a), argnums=(0, 1, 2))(query, key, value)
  for g, w in zip(got, want):
    np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(w, np.float32),
                               rtol=2e-2, atol=2e-2)


def test_splash_model_matches_xla(monkeypatch):
  """BertModel with attention='splash' (interpreted): the same params, the same outputs."""
  monkeypatch.setattr(attention, "splash_attention",
                      functools.partial(_SPLASH_ATTENTION, interpret=True))
  inputs = _batch()
  xla_model = modeling.BertModel(_tiny_model_config())
  params = xla_model.init(jax.random.key(0), *inputs)
  splash_model = modeling.BertModel(_tiny_model_config(attention="splash"))
  # The same param tree: a checkpoint of one restores into the other.
  assert (jax.tree.structure(splash_model.init(jax.random.key(0), *inputs))
          == jax.tree.structure(params))
  (sequence, pooled), (expected_sequence, expected_pooled) = (
      splash_model.apply(params, *inputs), xla_model.apply(params, *inputs))
  lengths = inputs[2].sum(-1)
  np.testing.assert_allclose(_real(sequence, lengths), _real(expected_sequence, lengths),
                             rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(pooled, expected_pooled, rtol=1e-4, atol=1e-4)


# ---- The checks: one line naming the field ----

def _config(**model):
  config = tiny.get_config()
  config.model.update(model)
  return config


@pytest.mark.parametrize("model, message", [
    (dict(attention="cudnn", dtype="bfloat16", attention_probs_dropout_prob=0.0),
     "model.attention='cudnn' runs only on GPU, but the backend is 'cpu'"),
    (dict(attention="splash", attention_probs_dropout_prob=0.0),
     "model.attention='splash' runs only on TPU, but the backend is 'cpu'"),
    (dict(attention="flash"), "model.attention='flash' is not one of xla, cudnn, splash"),
    (dict(attention="cudnn", dtype="float32"),
     "model.attention='cudnn' needs model.dtype='bfloat16'"),
])
def test_bad_attention_is_one_line(model, message):
  with pytest.raises(errors.UserError, match=message) as raised:
    validation.validate(_config(**model))
  assert "\n" not in str(raised.value)


def test_kernel_with_attention_dropout_is_one_line():
  config = _config(attention="splash")  # attention_probs_dropout_prob stays 0.1.
  with pytest.raises(errors.UserError) as raised:
    validation.validate(config, platform="tpu")
  assert str(raised.value).startswith("model.attention='splash' has no dropout")
  assert "--config.model.attention_probs_dropout_prob=0" in str(raised.value)
  assert "\n" not in str(raised.value)
  config.model.attention_probs_dropout_prob = 0.0
  validation.validate(config, platform="tpu")  # AOT for a TPU: allowed.
  config.mode = "eval"  # No training, no dropout: any probability will do.
  config.model.attention_probs_dropout_prob = 0.1
  validation.validate(config, platform="tpu")


def test_model_refuses_kernel_with_attention_dropout():
  """Callers that skip config_validation (fine-tuning) meet the same line when training."""
  model = modeling.BertModel(_tiny_model_config(attention="splash"))
  inputs = _batch()
  params = model.init(jax.random.key(0), *inputs)  # Init is fine: it only makes params.
  with pytest.raises(errors.UserError, match="attention_probs_dropout_prob=0"):
    model.apply(params, *inputs, deterministic=False, rngs={"dropout": jax.random.key(1)})


def test_attention_is_a_runtime_field():
  """A checkpoint saved with one implementation restores into a run with another."""
  from bert_jax.runtime import resume  # pylint: disable=g-import-not-at-top
  assert "attention" in modeling.BertConfig.RUNTIME_FIELDS
  saved = dataclasses.asdict(modeling.BertConfig(attention="xla"))
  resume.check_same_model(saved, modeling.BertConfig(attention="splash"), "/workdir")


# ---- 'splash' compiled for a TPU slice ----

def test_compile_splash_for_tpu():
  """The real kernel (Mosaic, not the interpreter) in the sharded train step, on v5e:2x2."""
  pytest.importorskip("libtpu")
  from bert_jax.tpu import aot  # pylint: disable=g-import-not-at-top
  config = tiny.get_config()
  config.model.update(vocab_size=128, hidden_size=128, num_hidden_layers=1,
                      num_attention_heads=2, intermediate_size=128, max_position_embeddings=128,
                      attention="splash", attention_probs_dropout_prob=0.0, dtype="bfloat16")
  config.data.update(max_seq_length=128, max_predictions_per_seq=4)
  config.train.update(batch_size=8, eval_batch_size=8)
  config.mesh.update(data=2, fsdp=2)
  report = aot.compile_for_topology(config, "v5e:2x2")
  assert report.fits
  kernels = set(re.findall(r"splash_mha_(fwd|dq|dkv)_segmented", report.compiled.as_text()))
  assert kernels == {"fwd", "dq", "dkv"}  # Forward and both backward kernels, not XLA's path.


_SHARDED_SPLASH = """
import flax.linen as nn, jax, jax.numpy as jnp, numpy as np
from bert_jax.model import attention
from bert_jax.runtime import sharding
from configs import tiny
config = tiny.get_config()
config.mesh.update(data=2, fsdp=1, tensor=2)
mesh, rules = sharding.create_mesh(config.mesh), sharding.logical_axis_rules(config)
keys = jax.random.split(jax.random.key(0), 3)
query, key, value = (jax.random.normal(k, (4, 16, 2, 64)) for k in keys)  # 2 heads, 2 devices
ids = (np.arange(16)[None] < np.array([[16], [9], [3], [12]])).astype(np.int32)  # [4, 16]
mask = ids[:, None, None, :].astype(bool)
with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
  context = jax.jit(lambda *a: attention.splash_attention(*a, interpret=True))(
      query, key, value, ids)
  text = jax.jit(lambda *a: attention.splash_attention(*a, interpret=True)).lower(
      query, key, value, ids).as_text()
  spec = attention._mesh_spec(("batch", "heads", None, None), (4, 2, 128, 64),
                              jax.sharding.get_abstract_mesh())
  assert spec == jax.P(("data", "fsdp"), "tensor", None, None), spec
  odd = attention._mesh_spec(("batch", "heads", None, None), (3, 2, 128, 64),
                             jax.sharding.get_abstract_mesh())
  assert odd == jax.P(None, "tensor", None, None), odd  # 3 rows do not split over 2.
assert "shard_map" in text or "sdy.manual_computation" in text, text[:2000]
expected = jax.nn.dot_product_attention(query, key, value, mask=mask)
real = mask[:, 0, 0, :, None, None]
np.testing.assert_allclose(np.where(real, context, 0), np.where(real, expected, 0), atol=1e-5)
print("ok")
"""


def test_splash_under_a_mesh():
  """Batch and heads split over 4 CPU devices (data=2, tensor=2): the shard_map's specs."""
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
         "JAX_PLATFORMS": "cpu"}
  result = subprocess.run([sys.executable, "-c", _SHARDED_SPLASH], cwd=_REPO, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]
