"""model.dtype='auto' and mesh.cpu_devices=0: what they choose, and that an explicit value wins."""

import jax
import pytest

from bert_jax.config import validation
from bert_jax.model import compute_dtype
from bert_jax.model import modeling
from bert_jax.runtime import precision
from configs import finetune
from configs import tiny


@pytest.mark.parametrize("platform, amx, expected", [
    ("tpu", False, "bfloat16"), ("gpu", False, "bfloat16"), ("cuda", False, "bfloat16"),
    ("cpu", True, "bfloat16"), ("cpu", False, "float32")])
def test_auto_picks_bfloat16_where_matrix_units_are_bfloat16(platform, amx, expected,
                                                             monkeypatch):
  monkeypatch.setattr(compute_dtype, "cpu_has_amx_bf16", lambda: amx)
  dtype, why = compute_dtype.choose("auto", platform)
  assert dtype == expected
  assert why.startswith("model.dtype='auto': ")
  assert ("AMX-BF16" in why) == (platform == "cpu")


@pytest.mark.parametrize("explicit", ["float32", "bfloat16", "float16"])
def test_an_explicit_dtype_always_wins(explicit, monkeypatch):
  for platform, amx in (("tpu", False), ("cpu", True), ("cpu", False)):
    monkeypatch.setattr(compute_dtype, "cpu_has_amx_bf16", lambda amx=amx: amx)
    assert compute_dtype.choose(explicit, platform) == (explicit, "model.dtype")


def test_a_model_built_from_an_auto_config_computes_as_this_backend_would():
  model = modeling.BertConfig.from_config(tiny.get_config().model)
  assert model.dtype == compute_dtype.choose("auto", jax.default_backend())[0]


def test_validate_resolves_auto_for_the_platform_it_compiles_for():
  """aot.py validates for 'tpu' from a CPU host: the TPU's dtype, not the host's."""
  config = tiny.get_config()
  assert config.model.dtype == "auto"
  validation.validate(config, platform="tpu")
  assert config.model.dtype == "bfloat16"
  config = tiny.get_config()
  config.model.dtype = "float32"
  validation.validate(config, platform="tpu")
  assert config.model.dtype == "float32"


def test_amx_is_read_from_the_cpu_flags():
  with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
    flags = next(line for line in cpuinfo if line.startswith("flags")).split()
  assert compute_dtype.cpu_has_amx_bf16() == ("amx_bf16" in flags)


def test_cpu_devices_one_per_core_for_finetuning_when_batches_divide():
  config = finetune.get_config()
  config.train.update(batch_size=32, eval_batch_size=64)
  assert precision.choose_cpu_devices(config, cores=2)[0] == 2
  assert precision.choose_cpu_devices(config, cores=4)[0] == 4
  config.train.batch_size = 30  # Divides by 2 and 3, not 4: the most that divides both.
  config.train.eval_batch_size = 60
  assert precision.choose_cpu_devices(config, cores=4)[0] == 3
  config.train.batch_size = 7
  count, why = precision.choose_cpu_devices(config, cores=2)
  assert count == 1 and "do not divide" in why


def test_cpu_devices_stay_one_for_pretraining_and_an_explicit_count_wins():
  config = tiny.get_config()
  assert precision.choose_cpu_devices(config, cores=2)[0] == 1
  config.mesh.cpu_devices = 2
  assert precision.choose_cpu_devices(config, cores=2) == (2, "mesh.cpu_devices")


def test_no_host_device_count_is_set_over_xla_flags_or_in_a_multi_process_job(monkeypatch):
  config = finetune.get_config()
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
  assert precision.set_cpu_devices(config, single_process=True) is None
  monkeypatch.delenv("XLA_FLAGS")
  assert precision.set_cpu_devices(config, single_process=False) is None
