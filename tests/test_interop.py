"""Parity with HF `transformers` BERT and Google's TF checkpoints; Orbax and workdir loading."""

import dataclasses
import json
import os
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from bert_jax import errors  # pylint: disable=g-import-not-at-top,wrong-import-position
from bert_jax.interop import convert  # pylint: disable=g-import-not-at-top,wrong-import-position
from bert_jax.interop import hf_params  # pylint: disable=g-import-not-at-top,wrong-import-position
from bert_jax.model import modeling  # pylint: disable=g-import-not-at-top,wrong-import-position
from bert_jax.runtime import checkpoint  # pylint: disable=g-import-not-at-top,wrong-import-position
from bert_jax.runtime import train_state  # pylint: disable=g-import-not-at-top,wrong-import-position

# Every dimension differs (vocab 99, hidden 32, heads 4 x head_dim 8, intermediate 37, 3 layers),
# so a wrong transpose or head split fails on shape or value, never passes by symmetry.
HF_CONFIG = dict(vocab_size=99, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                 intermediate_size=37, max_position_embeddings=512, type_vocab_size=2,
                 hidden_act="gelu")
TOLERANCE = 1e-5
HEADS = ["cls/predictions/output_bias", "cls/predictions/transform_LayerNorm/bias",
         "cls/predictions/transform_LayerNorm/scale", "cls/predictions/transform_dense/bias",
         "cls/predictions/transform_dense/kernel", "cls/seq_relationship/bias",
         "cls/seq_relationship/kernel"]


@pytest.fixture(scope="module")
def hf_model():
  torch.manual_seed(0)
  model = transformers.BertForPreTraining(transformers.BertConfig(**HF_CONFIG)).eval()
  with torch.no_grad():
    for name, param in model.named_parameters():
      # Random LayerNorm weights and biases everywhere: a swapped or dropped param shows.
      if "LayerNorm" in name or name.endswith("bias"):
        param.copy_(torch.randn_like(param) * 0.5 + (1.0 if name.endswith("weight") else 0.0))
      # Queries and keys 10x their init (std 0.2): attention far from uniform, so a wrong head
      # split changes the outputs by much more than the tolerance, whatever the seed's draws.
      elif name.endswith(("query.weight", "key.weight")):
        param.mul_(10.0)
  return model


@pytest.fixture(scope="module")
def hf_dir(hf_model, tmp_path_factory):
  path = str(tmp_path_factory.mktemp("hf") / "bert")
  hf_model.save_pretrained(path)  # safetensors
  return path


def _inputs(length=512, batch=2, predictions=6, seed=0):
  rng = np.random.default_rng(seed)
  input_ids = rng.integers(1, HF_CONFIG["vocab_size"], (batch, length)).astype(np.int32)
  input_mask = np.ones((batch, length), np.int32)
  input_mask[1, length * 2 // 3:] = 0  # The second example is padded.
  segment_ids = np.zeros((batch, length), np.int32)
  segment_ids[:, length // 3:] = 1  # Two segments.
  segment_ids *= input_mask
  positions = np.stack([rng.choice(length * 2 // 3, predictions, replace=False)
                        for _ in range(batch)]).astype(np.int32)
  return input_ids, segment_ids, input_mask, positions


def _hf_outputs(model, inputs):
  input_ids, segment_ids, input_mask, positions = (torch.from_numpy(x).long() for x in inputs)
  with torch.no_grad():
    out = model(input_ids=input_ids, token_type_ids=segment_ids, attention_mask=input_mask,
                output_hidden_states=True)
    bert = model.bert(input_ids=input_ids, token_type_ids=segment_ids, attention_mask=input_mask)
  # [batch, predictions, vocab]: HF scores every token; ours only the gathered positions.
  mlm = torch.gather(out.prediction_logits, 1,
                     positions[..., None].expand(-1, -1, out.prediction_logits.shape[-1]))
  return {"sequence": bert.last_hidden_state.numpy(), "pooled": bert.pooler_output.numpy(),
          "mlm": mlm.numpy(), "nsp": out.seq_relationship_logits.numpy()}


def _jax_outputs(config, params, inputs):
  mlm, nsp = modeling.BertForPreTraining(config).apply({"params": params}, *inputs)
  sequence, pooled = modeling.BertModel(config).apply({"params": params["bert"]}, *inputs[:3])
  return {"sequence": np.asarray(sequence), "pooled": np.asarray(pooled), "mlm": np.asarray(mlm),
          "nsp": np.asarray(nsp)}


def _max_differences(expected, actual, only=None):
  differences = {k: float(np.max(np.abs(expected[k] - actual[k]))) for k in only or expected}
  print("max abs differences:", differences)  # Shown with pytest -s; quoted in the report.
  return differences


@pytest.fixture(scope="module")
def reference(hf_model):
  inputs = _inputs()
  return inputs, _hf_outputs(hf_model, inputs)


def test_load_hf_matches_transformers_at_length_512(hf_dir, reference):
  config, params, report = convert.load_hf(hf_dir, return_report=True)
  assert config == modeling.BertConfig(**HF_CONFIG)
  assert report.initialized == []
  leaves = jax.tree_util.tree_leaves(params)
  assert all(leaf.dtype == np.float32 for leaf in leaves)
  inputs, expected = reference
  differences = _max_differences(expected, _jax_outputs(config, params, inputs))
  assert max(differences.values()) < TOLERANCE, differences


def test_wrong_head_split_would_fail_the_tolerance(hf_dir, reference):
  config, params = convert.load_hf(hf_dir)
  attention = params["bert"]["encoder"]["layer"]["attention"]
  # The classic mistake: reshape [embed, heads*head_dim] as [embed, head_dim, heads].
  kernel = attention["query_kernel"]  # [layers, embed, heads, head_dim]
  wrong = kernel.reshape(kernel.shape[0], kernel.shape[1], -1)
  wrong = wrong.reshape(*kernel.shape[:2], kernel.shape[3], kernel.shape[2]).transpose(0, 1, 3, 2)
  attention["query_kernel"] = np.ascontiguousarray(wrong)
  inputs, expected = reference
  differences = _max_differences(expected, _jax_outputs(config, params, inputs), ["sequence"])
  assert differences["sequence"] > 100 * TOLERANCE


def test_save_hf_loads_in_transformers_with_nothing_missing(hf_dir, reference, tmp_path):
  config, params = convert.load_hf(hf_dir)
  out = str(tmp_path / "exported")
  convert.save_hf(out, config, params)
  model, info = transformers.BertForPreTraining.from_pretrained(out, output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  assert not info["mismatched_keys"], info
  inputs, expected = reference
  differences = _max_differences(expected, _hf_outputs(model.eval(), inputs))
  assert max(differences.values()) < TOLERANCE, differences
  with pytest.raises(errors.UserError, match="already exists"):
    convert.save_hf(out, config, params)


def test_bert_model_checkpoint_initialises_and_reports_heads(hf_model, reference, tmp_path):
  path = str(tmp_path / "encoder")
  hf_model.bert.save_pretrained(path)  # Keys like embeddings.word_embeddings.weight.
  config, params, report = convert.load_hf(path, return_report=True)
  assert report.initialized == HEADS
  assert params["cls"]["seq_relationship"]["kernel"].shape == (32, 2)
  np.testing.assert_array_equal(params["cls"]["predictions"]["transform_LayerNorm"]["scale"],
                                np.ones(32, np.float32))
  inputs, expected = reference
  differences = _max_differences(expected, _jax_outputs(config, params, inputs),
                                 ["sequence", "pooled"])
  assert max(differences.values()) < TOLERANCE, differences
  mlm, _ = modeling.BertForPreTraining(config).apply({"params": params}, *inputs)
  assert np.all(np.isfinite(mlm))

  # An encoder saved without its pooler: the pooler is initialised too.
  no_pooler = transformers.BertModel(hf_model.config, add_pooling_layer=False)
  no_pooler.load_state_dict(hf_model.bert.state_dict(), strict=False)
  no_pooler.save_pretrained(str(tmp_path / "no_pooler"))
  _, params, report = convert.load_hf(str(tmp_path / "no_pooler"), return_report=True)
  assert report.initialized == ["bert/pooler/bias", "bert/pooler/kernel"] + HEADS
  np.testing.assert_array_equal(params["bert"]["pooler"]["bias"], np.zeros(32, np.float32))


def test_pytorch_model_bin_loads_without_pickle_code(hf_model, hf_dir, tmp_path):
  # A checkpoint as transformers 4 and earlier saved it (save_pretrained(safe_serialization=False));
  # transformers 5 writes safetensors only, but such files are still what many hub models hold.
  path = str(tmp_path / "bin")
  hf_model.config.save_pretrained(path)
  torch.save(hf_model.state_dict(), os.path.join(path, "pytorch_model.bin"))
  _, from_bin = convert.load_hf(path)
  _, from_safetensors = convert.load_hf(hf_dir)
  jax.tree_util.tree_map(np.testing.assert_array_equal, from_bin, from_safetensors)


def test_unexpected_and_mismatched_names_are_errors(hf_model, tmp_path):
  path = str(tmp_path / "odd")
  hf_model.save_pretrained(path)
  state = {k: v.numpy() for k, v in hf_model.state_dict().items()}
  config = modeling.BertConfig(**HF_CONFIG)
  with pytest.raises(errors.UserError, match="unexpected classifier.weight"):
    hf_params.params_from_hf_tensors({**state, "classifier.weight": np.zeros(3)}, config, path)
  state.pop("bert.encoder.layer.1.output.dense.bias")
  with pytest.raises(errors.UserError, match="missing bert.encoder.layer.1.output.dense.bias"):
    hf_params.params_from_hf_tensors(state, config, path)
  small = dataclasses.replace(config, intermediate_size=36)
  with pytest.raises(errors.UserError, match="intermediate.dense.weight has shape"):
    hf_params.params_from_hf_tensors({k: v.numpy() for k, v in hf_model.state_dict().items()},
                                     small, path)


def _write_tf_checkpoint(hf_model, prefix):
  """Writes the HF model's weights under the original BERT's TF variable names."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  variables = {"global_step": np.array(7, np.int64)}
  for name, tensor in hf_model.state_dict().items():
    array = tensor.numpy()
    if name.startswith("cls.predictions.decoder") or "position_ids" in name:
      continue
    tf_name = name.replace(".", "/")
    tf_name = tf_name.replace("LayerNorm/weight", "LayerNorm/gamma").replace(
        "LayerNorm/bias", "LayerNorm/beta")
    for i in range(HF_CONFIG["num_hidden_layers"]):
      tf_name = tf_name.replace(f"layer/{i}/", f"layer_{i}/")
    if tf_name.endswith("_embeddings/weight"):
      tf_name = tf_name[:-len("/weight")]
    elif tf_name == "cls/predictions/bias":
      tf_name = "cls/predictions/output_bias"
    elif tf_name.startswith("cls/seq_relationship"):
      # The original keeps the NSP weights as [2, hidden], i.e. [out, in].
      tf_name = tf_name.replace("weight", "output_weights").replace("/bias", "/output_bias")
    elif tf_name.endswith("/weight"):
      tf_name, array = tf_name[:-len("weight")] + "kernel", array.T  # TF dense: [in, out]
    variables[tf_name] = array
    if "layer_0/" in tf_name:  # Optimizer slots, to be skipped.
      variables[tf_name + "/adam_m"] = np.zeros_like(array)
      variables[tf_name + "/adam_v"] = np.zeros_like(array)
  graph = tf.Graph()
  with graph.as_default():
    tf_variables = [tf.compat.v1.Variable(value, name=name) for name, value in variables.items()]
    saver = tf.compat.v1.train.Saver(tf_variables)
    with tf.compat.v1.Session(graph=graph) as session:
      session.run(tf.compat.v1.global_variables_initializer())
      saver.save(session, prefix, write_meta_graph=False)


def test_tf_checkpoint_matches_transformers(hf_model, reference, tmp_path):
  directory = tmp_path / "uncased_L-3_H-32_A-4"
  directory.mkdir()
  prefix = str(directory / "bert_model.ckpt")
  _write_tf_checkpoint(hf_model, prefix)
  (directory / "bert_config.json").write_text(json.dumps(
      {**HF_CONFIG, "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
       "initializer_range": 0.02}))
  config, params, report = convert.load_tf_checkpoint(
      prefix, str(directory / "bert_config.json"), return_report=True)
  assert "global_step" in report.ignored
  assert "bert/encoder/layer_0/attention/self/query/kernel/adam_m" in report.ignored
  assert report.initialized == []
  inputs, expected = reference
  differences = _max_differences(expected, _jax_outputs(config, params, inputs))
  assert max(differences.values()) < TOLERANCE, differences
  # load_params finds it from the prefix and from the directory, bert_config.json beside it.
  for path in (prefix, str(directory)):
    _, again, report = convert.load_params(path, return_report=True)
    assert report.format == "tf"
    jax.tree_util.tree_map(np.testing.assert_array_equal, again, params)


def test_load_params_dispatches_orbax_hf_and_workdir(hf_dir, tmp_path):
  config, params = convert.load_hf(hf_dir)
  orbax_dir = str(tmp_path / "orbax")
  convert.save_orbax_params(orbax_dir, config, params)
  for path, kind in ((orbax_dir, "orbax"), (hf_dir, "hf")):
    loaded_config, loaded, report = convert.load_params(path, return_report=True)
    assert (loaded_config, report.format) == (config, kind)
    jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, params)

  # A training workdir as train.py leaves it: TrainState (params + Adam slots) and JSON meta.
  workdir = tmp_path / "workdir"
  tx = optax.adamw(1e-3)
  checkpointer = checkpoint.Checkpointer(checkpoint.checkpoint_dir(str(workdir)),
                                         async_save=False)
  for step, scale in ((2, 0.5), (4, 1.0)):
    state = train_state.TrainState(step=np.int32(step),
                             params=jax.tree_util.tree_map(lambda x, s=scale: x * s, params),
                             opt_state=tx.init(params))
    checkpointer.save(step, state, {"step": step, "model": dataclasses.asdict(config)},
                      force=True)
  checkpointer.close()
  for path in (workdir, workdir / "checkpoints", workdir / "checkpoints" / "4",
               workdir / "checkpoints" / "4" / "state"):
    loaded_config, loaded, report = convert.load_params(str(path), return_report=True)
    assert (loaded_config, report.format) == (config, "workdir")
    jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, params)  # The latest step.


def test_load_params_names_a_bad_path(tmp_path):
  with pytest.raises(errors.UserError, match="nowhere does not exist"):
    convert.load_params(str(tmp_path / "nowhere"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(errors.UserError, match="empty is not a checkpoint"):
    convert.load_params(str(tmp_path / "empty"))


def test_cli_round_trip_hf_orbax_hf(hf_dir, tmp_path):
  def run(*args):
    return subprocess.run([sys.executable, "-m", "bert_jax.interop", *args], capture_output=True,
                          text=True, cwd=os.path.dirname(os.path.dirname(__file__)), check=False)

  orbax_dir, hf_out = str(tmp_path / "orbax"), str(tmp_path / "hf")
  result = run(f"--input={hf_dir}", f"--output={orbax_dir}", "--format=orbax")
  assert result.returncode == 0, result.stderr
  assert "Wrote" in result.stdout
  # An HF directory needs its tokenizer: this checkpoint has no vocabulary beside it.
  result = run(f"--input={orbax_dir}", f"--output={hf_out}", "--format=hf")
  assert result.returncode == 1 and result.stderr.strip().splitlines()[-1] == (
      f"bert_jax.interop: error: {orbax_dir} has no vocabulary beside it (vocab.txt, "
      "vocab.model, or a bert_jax workdir's data/): pass --vocab_file")
  assert not os.path.exists(hf_out)
  vocab = tmp_path / "vocab.txt"
  vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] +
                             [f"word{i}" for i in range(HF_CONFIG["vocab_size"] - 5)]) + "\n")
  result = run(f"--input={orbax_dir}", f"--output={hf_out}", "--format=hf", f"--vocab_file={vocab}")
  assert result.returncode == 0, result.stderr
  _, original = convert.load_hf(hf_dir)
  _, round_trip = convert.load_hf(hf_out)
  jax.tree_util.tree_map(np.testing.assert_array_equal, round_trip, original)
  assert (tmp_path / "hf" / "vocab.txt").read_text() == vocab.read_text()
  # A second conversion into the same output is refused unless --overwrite says so.
  result = run(f"--input={orbax_dir}", f"--output={hf_out}", "--format=hf", f"--vocab_file={vocab}")
  assert result.returncode == 1 and result.stderr.strip().splitlines()[-1] == (
      f"bert_jax.interop: error: --output={hf_out} exists and is not empty: pass --overwrite to "
      "replace it, or name a new directory")
  result = run(f"--input={orbax_dir}", f"--output={hf_out}", "--format=hf", f"--vocab_file={vocab}",
               "--overwrite")
  assert result.returncode == 0, result.stderr
  assert sorted(os.listdir(tmp_path)) == ["hf", "orbax", "vocab.txt"]  # No temporary left.
  result = run(f"--input={orbax_dir}", f"--output={orbax_dir}", "--format=orbax")
  assert result.stderr.strip().splitlines()[-1] == (
      f"bert_jax.interop: error: --output={orbax_dir} is --input: it would replace the "
      "checkpoint it reads")
  result = run(f"--input={tmp_path / 'missing'}", f"--output={tmp_path / 'x'}")
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1].startswith("bert_jax.interop: error:")
  assert "missing does not exist" in result.stderr
