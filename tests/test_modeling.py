"""Model shapes, params tree, config I/O and the padding / gather contracts."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import errors
from bert_jax.interop import config_json
from bert_jax.model import modeling

CONFIG = modeling.BertConfig(vocab_size=97, hidden_size=32, num_hidden_layers=3,
                             num_attention_heads=4, intermediate_size=48,
                             max_position_embeddings=24)
BATCH, LENGTH, PREDICTIONS = 3, 16, 5


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  input_ids = rng.integers(5, CONFIG.vocab_size, (BATCH, LENGTH)).astype(np.int32)
  input_mask = np.ones((BATCH, LENGTH), np.int32)
  input_mask[1, 10:] = 0
  segment_ids = np.zeros((BATCH, LENGTH), np.int32)
  segment_ids[:, 8:] = 1
  positions = rng.integers(0, 10, (BATCH, PREDICTIONS)).astype(np.int32)
  return input_ids, segment_ids, input_mask, positions


@pytest.fixture(scope="module")
def boxed_params():
  model = modeling.BertForPreTraining(CONFIG)
  return model.init(jax.random.key(0), *_inputs())["params"]


def test_output_shapes_and_dtypes(boxed_params):
  params = nn.meta.unbox(boxed_params)
  mlm_logits, nsp_logits = modeling.BertForPreTraining(CONFIG).apply({"params": params},
                                                                     *_inputs())
  assert mlm_logits.shape == (BATCH, PREDICTIONS, CONFIG.vocab_size)
  assert nsp_logits.shape == (BATCH, 2)
  assert mlm_logits.dtype == nsp_logits.dtype == jnp.float32
  sequence_output, pooled_output = modeling.BertModel(CONFIG).apply(
      {"params": params["bert"]}, *_inputs()[:3])
  assert sequence_output.shape == (BATCH, LENGTH, CONFIG.hidden_size)
  assert pooled_output.shape == (BATCH, CONFIG.hidden_size)


def test_params_tree_has_bert_and_heads_with_logical_axes(boxed_params):
  assert set(boxed_params) == {"bert", "cls"}
  assert set(boxed_params["cls"]) == {"predictions", "seq_relationship"}
  layer = boxed_params["bert"]["encoder"]["layer"]
  query = layer["attention"]["query_kernel"]
  assert query.names == ("layers", "embed", "heads", "kv")
  assert query.value.shape == (3, 32, 4, 8)  # Stacked over layers by nn.scan.
  word = boxed_params["bert"]["embeddings"]["word_embeddings"]["embedding"]
  assert word.names == ("vocab", "embed")
  # Every param carries logical names, so sharding is rules only.
  leaves = jax.tree_util.tree_leaves(
      boxed_params, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
  assert all(isinstance(leaf, nn.LogicallyPartitioned) for leaf in leaves)


def test_decoder_is_tied_to_word_embeddings(boxed_params):
  params = nn.meta.unbox(boxed_params)
  names = jax.tree_util.tree_map_with_path(lambda p, _: jax.tree_util.keystr(p), params["cls"])
  assert not any("kernel" in n and "predictions" in n and "transform" not in n
                 for n in jax.tree_util.tree_leaves(names))
  changed = jax.tree_util.tree_map(lambda x: x, params)
  changed["bert"]["embeddings"]["word_embeddings"]["embedding"] = (
      params["bert"]["embeddings"]["word_embeddings"]["embedding"] * 2)
  model = modeling.BertForPreTraining(CONFIG)
  before, _ = model.apply({"params": params}, *_inputs())
  after, _ = model.apply({"params": changed}, *_inputs())
  assert not np.allclose(before, after)


def test_mlm_logits_depend_only_on_gathered_positions(boxed_params):
  params = nn.meta.unbox(boxed_params)
  model = modeling.BertForPreTraining(CONFIG)
  input_ids, segment_ids, input_mask, positions = _inputs()
  mlm_logits, _ = model.apply({"params": params}, input_ids, segment_ids, input_mask, positions)
  sequence_output, _ = modeling.BertModel(CONFIG).apply(
      {"params": params["bert"]}, input_ids, segment_ids, input_mask)
  # Gathering position p of example b must equal running the head on sequence_output[b, p].
  one = positions[:, :1]
  first, _ = model.apply({"params": params}, input_ids, segment_ids, input_mask, one)
  np.testing.assert_allclose(first[:, 0], mlm_logits[:, 0], rtol=1e-5, atol=1e-5)
  assert sequence_output.shape[1] == LENGTH


def test_padding_does_not_change_real_positions(boxed_params):
  params = nn.meta.unbox(boxed_params)
  input_ids, segment_ids, input_mask, _ = _inputs()
  model = modeling.BertModel(CONFIG)
  out, _ = model.apply({"params": params["bert"]}, input_ids, segment_ids, input_mask)
  garbage = input_ids.copy()
  garbage[1, 10:] = 7  # Example 1 is padded from position 10 on.
  out2, _ = model.apply({"params": params["bert"]}, garbage, segment_ids, input_mask)
  np.testing.assert_allclose(out[1, :10], out2[1, :10], rtol=1e-5, atol=1e-5)
  assert not np.allclose(out[1, 10:], out2[1, 10:])


def test_dropout_only_when_not_deterministic(boxed_params):
  params = nn.meta.unbox(boxed_params)
  model = modeling.BertForPreTraining(CONFIG)
  a, _ = model.apply({"params": params}, *_inputs())
  b, _ = model.apply({"params": params}, *_inputs())
  c, _ = model.apply({"params": params}, *_inputs(), deterministic=False,
                     rngs={"dropout": jax.random.key(1)})
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)


def test_bfloat16_compute_keeps_float32_params_and_outputs():
  config = dataclasses.replace(CONFIG, dtype="bfloat16")
  model = modeling.BertForPreTraining(config)
  params = nn.meta.unbox(model.init(jax.random.key(0), *_inputs())["params"])
  assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(params))
  mlm_logits, nsp_logits = model.apply({"params": params}, *_inputs())
  assert mlm_logits.dtype == nsp_logits.dtype == jnp.float32
  assert np.all(np.isfinite(mlm_logits))


def test_config_json_round_trip_in_original_and_hf_format(tmp_path):
  path = str(tmp_path / "config.json")
  config_json.write(CONFIG, path)
  assert config_json.read(path) == CONFIG
  # The original's bert_config.json has no layer_norm_eps; HF's has extra keys.
  (tmp_path / "bert_config.json").write_text(
      '{"attention_probs_dropout_prob": 0.1, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,'
      ' "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 3072,'
      ' "max_position_embeddings": 512, "num_attention_heads": 12, "num_hidden_layers": 12,'
      ' "type_vocab_size": 2, "vocab_size": 30522, "transformers_version": "4.57.6"}')
  base = config_json.read(str(tmp_path / "bert_config.json"))
  assert base == modeling.BertConfig()


def test_config_errors_name_the_field():
  with pytest.raises(errors.UserError, match="model.num_attention_heads"):
    modeling.BertConfig(hidden_size=30, num_attention_heads=4)
  with pytest.raises(errors.UserError, match="model.hidden_actt"):
    modeling.BertConfig.from_dict({"hidden_actt": "gelu"})


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_matmul_and_its_gradients_are_the_einsums(dtype):
  """modeling.matmul's hand-written gradients are autodiff's of the einsum it replaces:
  float32 to rounding, bfloat16 within its precision (float32 accumulation in both)."""
  keys = jax.random.split(jax.random.key(0), 4)
  x = jax.random.normal(keys[0], (3, 5, 8)).astype(dtype)  # [batch, length, in]
  kernel = jax.random.normal(keys[1], (8, 6))  # float32 params
  bias = jax.random.normal(keys[2], (6,))
  weights = jax.random.normal(keys[3], (3, 5, 6))

  def reference(x, kernel, bias):
    output = jnp.einsum("bli,io->blo", x.astype(jnp.float32), kernel) + bias
    return jnp.sum(output.astype(x.dtype).astype(jnp.float32) * weights)

  def ours(x, kernel, bias):
    return jnp.sum(modeling.matmul(x, kernel, bias).astype(jnp.float32) * weights)

  tolerance = 1e-5 if dtype == "float32" else 2e-2
  expected = jax.grad(reference, argnums=(0, 1, 2))(x, kernel, bias)
  got = jax.grad(ours, argnums=(0, 1, 2))(x, kernel, bias)
  assert modeling.matmul(x, kernel, bias).dtype == jnp.dtype(dtype)
  assert [g.dtype for g in got] == [jnp.dtype(dtype), jnp.float32, jnp.float32]
  for name, e, g in zip(("x", "kernel", "bias"), expected, got):
    e, g = np.asarray(e, np.float32), np.asarray(g, np.float32)
    np.testing.assert_allclose(g, e, rtol=tolerance, atol=tolerance * np.abs(e).max(),
                               err_msg=name)
