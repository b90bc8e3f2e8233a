"""Time and cost estimates of a run on a TPU slice: the arithmetic by hand, errors, the CLI.

No compile: bert_jax.tpu.estimate is arithmetic on the config (its --aot is bert_jax.tpu.aot's,
tested in test_aot.py).
"""

import json
import math
import os
import subprocess
import sys

import pytest

from bert_jax import errors
from bert_jax.model import flops
from bert_jax.model import modeling
from bert_jax.tpu import estimate
from configs import finetune
from configs import glue
from configs import large
from configs import large_lamb
from configs import squad
from configs import swag
from configs import tiny

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny_config():
  """tiny.py's model at the shape these numbers were worked out for (batch 32 x seq 128)."""
  config = tiny.get_config()
  config.model.dtype = "bfloat16"
  config.train.update(num_train_steps=1000, batch_size=32)
  config.data.update(max_seq_length=128, max_predictions_per_seq=20)
  return config


def test_tiny_run_on_v5litepod_16_by_hand():
  """tiny.py's model (L2/H128/I512, vocab 4000), batch 32 x seq 128, 20 predictions, 1,000 steps."""
  result = estimate.estimate(_tiny_config(), "v5litepod-16", mfu=0.5, price_per_chip_hour=2.0)
  b, l, p, h, i, v = 32, 128, 20, 128, 512, 4000
  forward = 2 * (2 * b * l * (4 * h * h + 2 * h * i) + 4 * b * l * l * h)  # Two layers.
  forward += 2 * b * h * h + 2 * b * p * h * (h + v) + 2 * b * h * 2  # Pooler, MLM, NSP.
  assert 3 * forward == 13_306_478_592
  (phase,) = result.phases
  assert phase.flops_per_step == 13_306_478_592 == flops.pretraining_flops_per_step(
      _tiny_config().model, 32, 128, 20)
  assert (phase.num_steps, phase.batch_size, phase.seq_length,
          phase.max_predictions_per_seq) == (1000, 32, 128, 20)
  # 16 v5e chips x 197 TFLOP/s (bfloat16 datasheet) x 0.5 = 1.576e15 FLOP/s.
  assert result.peak_tflops_per_chip == 197.0
  assert result.device_kind == "TPU v5 lite"
  assert phase.seconds_per_step == pytest.approx(13_306_478_592 / 1.576e15)  # 8.44 us.
  assert result.total_flops == 1000 * 13_306_478_592
  hours = 1000 * 13_306_478_592 / 1.576e15 / 3600
  assert result.hours == pytest.approx(hours)
  assert result.chip_hours == pytest.approx(16 * hours)
  assert result.cost == pytest.approx(2.0 * 16 * hours)
  assert result.price_source == "--price_per_chip_hour"


def test_list_price_and_v4_peak():
  """v4-128 is 64 chips (the name counts TensorCores) at 275 TFLOP/s each."""
  config = large.get_config()
  config.model.dtype = "bfloat16"
  result = estimate.estimate(config, "v4-128")
  assert result.topology.num_chips == 64
  assert result.peak_tflops_per_chip == 275.0
  assert result.mfu == estimate.DEFAULT_MFU == 0.45
  assert result.price_per_chip_hour == estimate.LIST_PRICE_PER_CHIP_HOUR["v4"]
  assert "as remembered" in result.price_source
  # configs/large.py as shipped: 1M steps of 256 x 128.
  (phase,) = result.phases
  assert phase.seconds_per_step == pytest.approx(
      flops.pretraining_flops_per_step(config.model, 256, 128, 20) / (64 * 275e12 * 0.45))
  assert result.hours == pytest.approx(1_000_000 * phase.seconds_per_step / 3600)


def test_peak_override_from_config():
  config = _tiny_config()
  config.model.dtype = "float32"
  config.train.peak_tflops_per_device = 100.0
  result = estimate.estimate(config, "v5e:4x4", mfu=1.0)
  assert (result.peak_tflops_per_chip, result.peak_source) == (
      100.0, "train.peak_tflops_per_device")
  assert result.phases[0].seconds_per_step == pytest.approx(13_306_478_592 / (16 * 100e12))


def test_phase2_fields():
  """With the phase-2 fields: steps [0, start) at the phase-1 shape, the rest at phase 2's."""
  config = _tiny_config()
  config.train.phase2_start_step = 900
  config.train.phase2_batch_size = 16
  config.data.phase2_max_seq_length = 512
  config.data.phase2_max_predictions_per_seq = 80
  config.model.max_position_embeddings = 512  # Else the run (and so estimate) refuses phase 2.
  result = estimate.estimate(config, "v5litepod-16", mfu=0.5, price_per_chip_hour=1.0)
  one, two = result.phases
  assert (one.num_steps, one.batch_size, one.seq_length) == (900, 32, 128)
  assert (two.num_steps, two.batch_size, two.seq_length, two.max_predictions_per_seq) == (
      100, 16, 512, 80)
  assert two.flops_per_step == flops.pretraining_flops_per_step(config.model, 16, 512, 80)
  assert result.total_flops == 900 * one.flops_per_step + 100 * two.flops_per_step
  assert result.hours == pytest.approx(result.total_flops / (16 * 197e12 * 0.5) / 3600)
  assert "phase 2 " in estimate.format_estimate(result)
  # Past the end: the run's own one-line error. Off (0): one phase.
  config.train.phase2_start_step = 1000
  with pytest.raises(errors.UserError, match="train.phase2_start_step=1000 must be between 1 "
                     "and train.num_train_steps - 1 = 999"):
    estimate.run_phases(config)
  config.train.phase2_start_step = 0
  assert len(estimate.run_phases(config)) == 1


def test_large_lamb_has_two_phases():
  """configs/large_lamb.py: 7,038 steps at 65,536 x 128, then 1,561 at 32,768 x 512."""
  config = large_lamb.get_config()
  assert estimate.run_phases(config) == [(7038, 65536, 128, 20), (1561, 32768, 512, 80)]


@pytest.mark.parametrize("topology, kwargs, message", [
    ("v5e-16x16", {}, "unknown TPU topology 'v5e-16x16'"),
    ("v3-8", {}, "unknown TPU topology 'v3-8'"),
    ("v5litepod-16", {"mfu": 0.0}, "--mfu=0.0: must be in"),
    ("v5litepod-16", {"mfu": 45.0}, "--mfu=45.0: must be in"),
    ("v5litepod-16", {"price_per_chip_hour": -1.0}, "--price_per_chip_hour=-1.0"),
])
def test_errors_are_one_line(topology, kwargs, message):
  with pytest.raises(errors.UserError, match=message) as raised:
    estimate.estimate(_tiny_config(), topology, **kwargs)
  assert "\n" not in str(raised.value)


def test_float32_on_tpu_is_an_error():
  """TPUs quote bfloat16 only: a float32 config gets no made-up peak."""
  config = _tiny_config()
  config.model.dtype = "float32"
  with pytest.raises(errors.UserError, match="model.dtype='float32'.*bfloat16"):
    estimate.estimate(config, "v5litepod-16")


# ---- Fine-tuning ----

# tiny.py's model shape, as --bert_config would give it.
_TINY_MODEL = modeling.BertConfig(vocab_size=4000, hidden_size=128, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=512,
                                  max_position_embeddings=128)


def _encoder_forward_by_hand(sequences, length, hidden=128, intermediate=512, layers=2):
  """flops.py's encoder + pooler count for _TINY_MODEL, written out."""
  per_layer = (2 * sequences * length * (4 * hidden * hidden + 2 * hidden * intermediate)
               + 4 * sequences * length * length * hidden)
  return layers * per_layer + 2 * sequences * hidden * hidden


def test_finetune_sst2_by_hand():
  """configs/glue.py (SST-2: 67,349 examples, 3 epochs, batch 32 x seq 128) on 4 v5e chips."""
  result = estimate.estimate(glue.get_config(), "v5e:2x2", mfu=0.5, price_per_chip_hour=2.0,
                             architecture=_TINY_MODEL)
  (phase,) = result.phases
  assert phase.num_steps == math.ceil(67349 * 3 / 32) == 6314
  assert (phase.batch_size, phase.seq_length) == (32, 128)
  classifier = 2 * 32 * 128 * 2  # [CLS] -> 2 labels.
  step_flops = 3 * (_encoder_forward_by_hand(32, 128) + classifier)
  assert phase.flops_per_step == step_flops
  # 4 chips x 197 TFLOP/s (model.dtype 'auto' is bfloat16 on a TPU) x 0.5.
  assert result.dtype == "bfloat16"
  assert phase.seconds_per_step == pytest.approx(step_flops / (4 * 197e12 * 0.5))
  hours = 6314 * step_flops / (4 * 197e12 * 0.5) / 3600
  assert result.hours == pytest.approx(hours)
  assert result.cost == pytest.approx(2.0 * 4 * hours)
  run = result.finetune
  assert (run.task.name, run.task.family, run.num_train_examples) == ("sst2", "classification",
                                                                      67349)
  lines = estimate.format_estimate(result).splitlines()
  assert lines[1] == ("steps      ceil(67,349 examples (sst2's published training set) x 3 "
                      "epochs / batch 32) = 6,314")
  assert lines[2].startswith("run        6,314 steps of batch 32 x seq 128 (sst2, family "
                             "classification; 8 sequences per chip, unpacked)")


def test_finetune_small_figures_keep_their_cents():
  """SST-2 on BERT-Base (glue.py's config.model) costs cents: printed, not rounded to $0."""
  result = estimate.estimate(glue.get_config(), "v5e:2x2")
  hours = 6314 * result.phases[0].flops_per_step / (4 * 197e12 * 0.45) / 3600
  assert result.cost == pytest.approx(4 * 1.20 * hours)
  lines = estimate.format_estimate(result).splitlines()
  assert lines[-4] == f"time       {hours * 60:,.1f} minutes ({hours:.2f} hours) on 4 chips"
  assert lines[-3] == f"chip-hours {4 * hours:.2f}"
  assert lines[-2].startswith(f"cost       ${4 * 1.20 * hours:.2f} at $1.20 per chip-hour")
  assert 0.01 < 4 * 1.20 * hours < 1


def test_finetune_steps_from_flag_or_config():
  """--num_train_examples replaces the published size; train.num_train_steps wins over both."""
  config = glue.get_config()
  config.train.num_train_epochs = 2.0
  result = estimate.estimate(config, "v5e:2x2", num_train_examples=1000, architecture=_TINY_MODEL)
  assert result.num_steps == math.ceil(1000 * 2 / 32) == 63
  assert result.finetune.examples_source == "--num_train_examples"
  config.train.num_train_steps = 50
  result = estimate.estimate(config, "v5e:2x2", num_train_examples=1000, architecture=_TINY_MODEL)
  assert result.num_steps == 50
  assert "steps      50 (train.num_train_steps)" in estimate.format_estimate(result)


def test_finetune_span_and_multiple_choice_heads():
  """SQuAD's head reads every token (start, end); SWAG's scores each of 4 endings."""
  squad_config = squad.get_config()
  squad_config.data.max_seq_length = 128
  result = estimate.estimate(squad_config, "v5e:2x2", architecture=_TINY_MODEL)
  assert result.num_steps == math.ceil(87599 * 2 / 32)
  span_head = 2 * 32 * 128 * 128 * 2
  assert result.phases[0].flops_per_step == 3 * (_encoder_forward_by_hand(32, 128) + span_head)
  assert "counted in examples" in estimate.format_estimate(result)
  swag_config = swag.get_config()  # Batch 16 of 4 choices: 64 sequences.
  result = estimate.estimate(swag_config, "v5e:2x2", architecture=_TINY_MODEL,
                             num_train_examples=160)
  assert result.num_steps == math.ceil(160 * 3 / 16) == 30
  choice_head = 2 * 64 * 128 * 1
  assert result.phases[0].flops_per_step == 3 * (_encoder_forward_by_hand(64, 128)
                                                 + choice_head)
  assert "batch 16 x 4 choices x seq 128" in estimate.format_estimate(result)


@pytest.mark.parametrize("kwargs, message", [
    ({}, "config.task='classification' has no published training-set size.*pass "
         "--num_train_examples=N"),
    ({"num_train_examples": -5}, "--num_train_examples=-5: must be at least 0"),
])
def test_finetune_step_count_errors(kwargs, message):
  """The user's own files: no published size, so the steps need --num_train_examples."""
  with pytest.raises(errors.UserError, match=message) as raised:
    estimate.estimate(finetune.get_config(), "v5e:2x2", **kwargs)
  assert "\n" not in str(raised.value)


def test_finetune_run_checks_apply():
  """What the run refuses gets no estimate: an unknown task, a SQuAD window with no context."""
  config = glue.get_config()
  config.task = "sst3"
  with pytest.raises(errors.UserError, match="config.task: unknown task 'sst3'"):
    estimate.estimate(config, "v5e:2x2")
  config = squad.get_config()
  config.data.max_seq_length = 64
  with pytest.raises(errors.UserError, match="data.max_seq_length=64 leaves no room for the "
                     "context after data.max_query_length=64"):
    estimate.estimate(config, "v5e:2x2")


def test_finetune_model_too_short_is_an_error():
  with pytest.raises(errors.UserError, match="data.max_seq_length=384 is larger than the model's "
                     "max_position_embeddings=128"):
    estimate.estimate(squad.get_config(), "v5e:2x2", architecture=_TINY_MODEL)


def _run_cli(*args):
  return subprocess.run([sys.executable, "-m", "bert_jax.tpu.estimate", *args], cwd=_REPO,
                        capture_output=True, text=True, timeout=120, check=False)


def test_cli_on_large():
  result = _run_cli("--config=configs/large.py", "--topology=v5litepod-256",
                    "--config.model.dtype=bfloat16")
  assert result.returncode == 0, result.stderr[-2000:]
  lines = result.stdout.strip().splitlines()
  assert [line.split()[0] for line in lines[:-1]] == [
      "slice", "run", "total", "mfu", "time", "chip-hours", "cost"]
  assert lines[0].startswith("slice      v5e:16x16 (Cloud TPU v5litepod-256): 256 chips x 197 "
                             "TFLOP/s (TPU v5 lite datasheet, bfloat16) = 50.4 PFLOP/s peak")
  assert lines[1].startswith("run        1,000,000 steps of batch 256 x seq 128 (20 predictions; "
                             "1 sequence per chip): 6.160e+13 model FLOPs per step")
  assert "ASSUMED" in lines[3]
  assert lines[-2].endswith("at $1.20 per chip-hour (v5e on-demand list price as remembered, "
                            "check cloud.google.com/tpu/pricing)")
  assert lines[-1].startswith("An estimate from the model FLOP formula at an assumed MFU")


def test_cli_errors_are_one_line():
  result = _run_cli("--config=configs/large.py", "--topology=v5litepod-256",
                    "--config.model.dtype=float32")
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1].startswith(
      "bert_jax: error: model.dtype='float32': no datasheet peak for TPU v5 lite")
  result = _run_cli("--config=configs/large.py", "--topology=v5e-16x16",
                    "--config.model.dtype=bfloat16")
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1].startswith(
      "bert_jax: error: unknown TPU topology 'v5e-16x16'")


def test_cli_on_glue(tmp_path):
  """configs/glue.py with a bert_config.json: no checkpoint, no data."""
  bert_config = tmp_path / "bert_config.json"
  bert_config.write_text(json.dumps({"hidden_size": 128, "num_hidden_layers": 2,
                                     "num_attention_heads": 2, "intermediate_size": 512,
                                     "vocab_size": 4000, "max_position_embeddings": 128}))
  result = _run_cli("--config=configs/glue.py", "--topology=v5litepod-4",
                    f"--bert_config={bert_config}", "--num_train_examples=3200")
  assert result.returncode == 0, result.stderr[-2000:]
  lines = result.stdout.strip().splitlines()
  assert [line.split()[0] for line in lines[:-1]] == [
      "slice", "steps", "run", "total", "mfu", "time", "chip-hours", "cost"]
  assert lines[1] == ("steps      ceil(3,200 examples (--num_train_examples) x 3 epochs / batch "
                      "32) = 300")
  step_flops = 3 * (_encoder_forward_by_hand(32, 128) + 2 * 32 * 128 * 2)
  assert lines[2].startswith(f"run        300 steps of batch 32 x seq 128 (sst2, family "
                             f"classification; 8 sequences per chip, unpacked): "
                             f"{step_flops:.3e} model FLOPs per step")
  assert lines[-2].startswith("cost       $0.00 at $1.20 per chip-hour (v5e on-demand")


def test_a_sweep_counts_every_member():
  """config.sweep: 4 learning rates x 2 seeds trained together are 8 runs' FLOPs per step."""
  alone = estimate.estimate(glue.get_config(), "v5e:2x2", architecture=_TINY_MODEL)
  config = glue.get_config()
  config.sweep.learning_rates = (5e-5, 4e-5, 3e-5, 2e-5)
  config.sweep.seeds = 2
  result = estimate.estimate(config, "v5e:2x2", architecture=_TINY_MODEL)
  assert result.finetune.members == 8
  assert result.phases[0].flops_per_step == 8 * alone.phases[0].flops_per_step
  assert result.phases[0].num_steps == alone.phases[0].num_steps
  assert result.hours == pytest.approx(8 * alone.hours)
  line = estimate.format_estimate(result).splitlines()[2]
  assert "steps of batch 32 x seq 128 x 8 sweep members (sst2" in line
  assert "64 sequences per chip" in line
