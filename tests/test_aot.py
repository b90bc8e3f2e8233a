"""AOT compile for TPU slices: topology names, the memory report, the CLI.

The compiles need libtpu (the `test` extra installs it on Linux x86_64), not a TPU.
"""

import os
import subprocess
import sys

import jax
import pytest

from bert_jax import errors
from bert_jax.model import flops
from bert_jax.model import modeling
from bert_jax.tpu import tpu_topology
from configs import base
from configs import glue
from configs import large
from configs import swag
from configs import tiny

# libtpu allows one process per host to load it (/tmp/libtpu_lockfile); a test process only
# compiles, so it must not be turned away by another one (a parallel test run, a training job).
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- Topology names (no libtpu needed) ----

@pytest.mark.parametrize("name, compiler_name, accelerator_type, num_chips", [
    ("v5e:4x4", "v5e:4x4", "v5litepod-16", 16),
    ("v5e:16x16", "v5e:16x16", "v5litepod-256", 256),
    ("v6e:4x4", "v6e:4x4", "v6e-16", 16),
    ("v4:2x2x1", "v4:2x2x1", "v4-8", 4),
    ("v5p:2x2x2", "v5p:2x2x2", "v5p-16", 8),
    ("v5litepod-16", "v5e:4x4", "v5litepod-16", 16),
    ("v5e-16", "v5e:4x4", "v5litepod-16", 16),
    ("V5E-8", "v5e:2x4", "v5litepod-8", 8),
    ("v5litepod-1", "v5e:1x1", "v5litepod-1", 1),
    ("v5litepod-256", "v5e:16x16", "v5litepod-256", 256),
    ("v6e-16", "v6e:4x4", "v6e-16", 16),
    ("v6e-32", "v6e:4x8", "v6e-32", 32),
    # v4 and v5p accelerator types count TensorCores, two per chip.
    ("v4-8", "v4:2x2x1", "v4-8", 4),
    ("v4-32", "v4:2x2x4", "v4-32", 16),
    ("v4-128", "v4:4x4x4", "v4-128", 64),
    ("v5p-8", "v5p:2x2x1", "v5p-8", 4),
    ("v5p-16", "v5p:2x2x2", "v5p-16", 8),
    ("v5p-64", "v5p:2x4x4", "v5p-64", 32),
])
def test_parse_topology(name, compiler_name, accelerator_type, num_chips):
  topology = tpu_topology.parse(name)
  assert (topology.name, topology.accelerator_type, topology.num_chips) == (
      compiler_name, accelerator_type, num_chips)


def test_hbm_per_chip():
  assert {chip: tpu_topology.parse(name).hbm_bytes_per_chip / 2**30 for chip, name in [
      ("v4", "v4-8"), ("v5e", "v5e-4"), ("v5p", "v5p-8"), ("v6e", "v6e-4")]} == {
          "v4": 32, "v5e": 16, "v5p": 95, "v6e": 32}


@pytest.mark.parametrize("name, message", [
    ("v5e-16x16", "unknown TPU topology"),
    ("tpu", "unknown TPU topology"),
    ("v3-8", "unknown TPU topology"),
    ("v5e:4x4x1", "2D tori"),
    ("v4:2x2", "3D tori"),
    ("v5e-17", "no standard v5e slice has 17 chips"),
    ("v4-9", "no standard v4 slice has 9 TensorCores"),
    ("v5litepod-512", "no standard v5e slice"),
])
def test_parse_topology_errors(name, message):
  with pytest.raises(errors.UserError, match=message) as raised:
    tpu_topology.parse(name)
  assert "\n" not in str(raised.value)


# ---- Model FLOPs ----

def test_flops_bert_large():
  """BERT-Large, seq 512: ~6 * params * tokens, params counted without the embeddings."""
  config = large.get_config().model
  step = flops.pretraining_flops_per_step(config, batch_size=256, seq_len=512,
                                          max_predictions_per_seq=80)
  # Hand count of the formula in flops.py.
  b, l, p, h, i, v = 256, 512, 80, 1024, 4096, 30522
  forward = 24 * (2 * b * l * (4 * h * h + 2 * h * i) + 4 * b * l * l * h)
  forward += 2 * b * p * h * (h + v) + 2 * b * h * (h + 2)
  assert step == 3 * forward
  encoder_params = 24 * (4 * h * h + 2 * h * i)
  assert 1.0 < step / (6 * encoder_params * b * l) < 1.25  # Attention adds ~16% at seq 512.


def test_flops_scale_with_batch():
  config = base.get_config().model
  one = flops.pretraining_flops_per_step(config, 1, 128, 20)
  assert flops.pretraining_flops_per_step(config, 256, 128, 20) == 256 * one


# ---- AOT compiles (need libtpu) ----

def _small_config(**mesh):
  """tiny.py shrunk further: a one-layer model that the TPU compiler handles in seconds."""
  config = tiny.get_config()
  config.model.update(vocab_size=128, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=16)
  config.data.update(max_seq_length=16, max_predictions_per_seq=4)
  config.train.update(batch_size=8, eval_batch_size=8)
  config.mesh.update(**mesh)
  return config


def test_compile_small_config_with_fsdp():
  pytest.importorskip("libtpu")
  from bert_jax.tpu import aot  # pylint: disable=g-import-not-at-top
  report = aot.compile_for_topology(_small_config(data=2, fsdp=2), "v5e:2x2")
  assert report.mesh_shape == {"data": 2, "fsdp": 2, "tensor": 1}
  assert report.num_devices == 4
  memory = report.memory
  assert min(memory.argument_bytes, memory.output_bytes, memory.alias_bytes,
             memory.generated_code_bytes) > 0
  assert 0 < memory.total_bytes < report.hbm_bytes_per_device == 16 * 2**30
  assert report.fits
  # The donated state comes back in place: nearly all of the output is aliased.
  assert memory.alias_bytes > 0.9 * memory.output_bytes

  (state_shardings, _, _), _ = report.compiled.input_shardings
  embeddings = state_shardings.params["bert"]["embeddings"]["word_embeddings"]["embedding"]
  assert "fsdp" in tuple(embeddings.spec)  # [vocab, embed]: embed over fsdp.
  leaves = jax.tree.leaves(state_shardings.params)
  assert sum("fsdp" in tuple(s.spec) for s in leaves) > len(leaves) // 2

  lines = aot.format_report(report, _small_config(data=2, fsdp=2)).splitlines()
  assert lines[0] == ("slice      v5e:2x2 (Cloud TPU v5litepod-4): 4 chips, 4 devices; mesh "
                      "data=2 fsdp=2 tensor=1")
  assert any(line.startswith("  total at peak") for line in lines)
  assert lines[-1].startswith("FITS: ")


def test_bad_mesh_is_a_user_error():
  pytest.importorskip("libtpu")
  from bert_jax.tpu import aot  # pylint: disable=g-import-not-at-top
  with pytest.raises(errors.UserError, match="mesh"):
    aot.compile_for_topology(_small_config(data=3, fsdp=1), "v5e:2x2")


# ---- Fine-tuning configs (need libtpu) ----

# A two-layer model the TPU compiler handles in seconds: what --bert_config would give.
_SMALL_MODEL = modeling.BertConfig(vocab_size=128, hidden_size=64, num_hidden_layers=2,
                                   num_attention_heads=2, intermediate_size=128,
                                   max_position_embeddings=32)


def _small_finetune_config(module):
  """A fine-tuning config (configs/glue.py, swag.py) at batch 8 x seq 32; its config.model is
  left at BERT-Base's, so only the architecture passed to the compile can make it small."""
  config = module.get_config()
  config.data.max_seq_length = 32
  config.train.update(batch_size=8, eval_batch_size=8)
  return config


def _encoder_forward_by_hand(sequences, length, layers=2, hidden=64, intermediate=128):
  """flops.py's encoder + pooler count for _SMALL_MODEL, written out."""
  per_layer = (2 * sequences * length * (4 * hidden * hidden + 2 * hidden * intermediate)
               + 4 * sequences * length * length * hidden)
  return layers * per_layer + 2 * sequences * hidden * hidden


@pytest.mark.parametrize("module, family, sequences, head_outputs, step_shape", [
    # SST-2: 8 sequences, a [CLS] classifier of 2 labels.
    (glue, "classification", 8, 2, "batch 8 x seq 32"),
    # SWAG: 8 examples of 4 (context, ending) pairs, one score per pair.
    (swag, "multiple_choice", 32, 1, "batch 8 x 4 choices x seq 32"),
])
def test_compile_finetuning_config(module, family, sequences, head_outputs, step_shape):
  pytest.importorskip("libtpu")
  from bert_jax.tpu import aot  # pylint: disable=g-import-not-at-top
  config = _small_finetune_config(module)
  report = aot.compile_for_topology(config, "v5e:2x2", _SMALL_MODEL)
  assert report.task.family == family
  assert report.mesh_shape == {"data": 4, "fsdp": 1, "tensor": 1}
  # The architecture passed in, not config.model's BERT-Base (110M params).
  assert report.param_count < 200_000
  assert report.model_config.hidden_size == 64
  memory = report.memory
  assert min(memory.argument_bytes, memory.output_bytes, memory.temp_bytes,
             memory.generated_code_bytes) > 0
  assert memory.alias_bytes > 0.9 * memory.output_bytes  # The donated state, updated in place.
  assert report.fits
  head = 2 * sequences * 64 * head_outputs
  assert report.flops_per_step == 3 * (_encoder_forward_by_hand(sequences, 32) + head)
  (_, batch_sharding, _), _ = report.compiled.input_shardings
  assert "label_ids" in batch_sharding
  lines = aot.format_report(report, config).splitlines()
  assert lines[1].startswith("model      0.1M params, 2 layers, hidden 64, dtype bfloat16")
  assert lines[2].startswith(f"step       fine-tuning {config.task} (family {family}")
  assert step_shape + ", unpacked" in lines[2]
  assert lines[-1].startswith("FITS: ")


@pytest.mark.parametrize("mode", ["eval", "encode", "predict"])
def test_other_modes_are_one_line_errors(mode):
  from bert_jax.tpu import aot  # pylint: disable=g-import-not-at-top
  config = tiny.get_config()
  config.mode = mode
  with pytest.raises(errors.UserError, match=f"config.mode='{mode}' is not supported") as raised:
    aot.compile_for_topology(config, "v5e:2x2")
  assert "\n" not in str(raised.value)


def test_bert_config_is_for_finetuning_only():
  from bert_jax.tpu import aot  # pylint: disable=g-import-not-at-top
  with pytest.raises(errors.UserError, match="--bert_config is for fine-tuning configs"):
    aot.compile_for_topology(tiny.get_config(), "v5e:2x2", _SMALL_MODEL)


def _run_cli(*args):
  return subprocess.run([sys.executable, "-m", "bert_jax.tpu.aot", *args], cwd=_REPO,
                        capture_output=True, text=True, timeout=300, check=False)


def test_cli_reports_does_not_fit():
  """A 67M-row vocabulary: its logits and embedding gradients exceed a v5e chip's HBM.

  The compiler refuses such a program within seconds, which makes it the cheap CLI check.
  """
  pytest.importorskip("libtpu")
  overrides = ["--config.model.vocab_size=67108864", "--config.model.hidden_size=32",
               "--config.model.num_hidden_layers=1", "--config.model.num_attention_heads=2",
               "--config.model.intermediate_size=64", "--config.model.max_position_embeddings=16",
               "--config.data.max_seq_length=16", "--config.data.max_predictions_per_seq=4",
               "--config.train.batch_size=8", "--config.train.eval_batch_size=8",
               "--config.mesh.data=4"]
  result = _run_cli("--config=configs/tiny.py", "--topology=v5litepod-4", *overrides)
  assert result.returncode == 2, result.stderr[-2000:]
  lines = result.stdout.strip().splitlines()
  assert lines[0].startswith("slice      v5e:2x2 (Cloud TPU v5litepod-4): 4 chips")
  assert lines[-1].startswith("DOES NOT FIT: the compiler refused the program")
  assert "RESOURCE_EXHAUSTED" in lines[-1]
  # libtpu's host-bounds warnings are silenced by the CLI's environment defaults.
  assert "TPU_ACCELERATOR_TYPE" not in result.stderr


def test_cli_bad_topology_is_one_line():
  result = _run_cli("--config=configs/tiny.py", "--topology=v5e-16x16")
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      f"bert_jax: error: unknown TPU topology 'v5e-16x16'; accepted: "
      f"{tpu_topology.ACCEPTED_FORMS}")


def test_compile_a_sweep():
  """config.sweep's step for a slice: every member's state and batch, the members split over
  'data' (4 members on 4 chips: one each)."""
  pytest.importorskip("libtpu")
  from bert_jax.tpu import aot  # pylint: disable=g-import-not-at-top
  alone = aot.compile_for_topology(_small_finetune_config(glue), "v5e:2x2", _SMALL_MODEL)
  config = _small_finetune_config(glue)
  config.sweep.learning_rates = (5e-5, 2e-5)
  config.sweep.seeds = 2
  report = aot.compile_for_topology(config, "v5e:2x2", _SMALL_MODEL)
  assert report.param_count == 4 * alone.param_count
  assert report.flops_per_step == 4 * alone.flops_per_step
  assert report.fits and report.memory.alias_bytes > 0.9 * report.memory.output_bytes
  # One member per chip: each holds one member's state, as the run alone holds its own.
  assert report.memory.argument_bytes < 1.5 * alone.memory.argument_bytes
  (_, batch_sharding, _, _), _ = report.compiled.input_shardings
  assert batch_sharding["input_ids"].spec[0] == "data"
  assert "batch 8 x seq 32 x 4 sweep members, unpacked" in aot.format_report(report, config)
