"""bench/device_check.py: the prepared accelerator check runs whole on a CPU without TensorFlow."""

import json
import os
import subprocess
import sys

import pytest

from bench import device_check
from bench import device_report
from bench import device_rows
from test_train import REPO

# Runs a module with TensorFlow and TFDS unimportable, as on a GPU box that has only JAX: any
# import of either, however indirect, raises ImportError.
_WITHOUT_TENSORFLOW = ("import runpy, sys; sys.modules['tensorflow'] = None; "
                       "sys.modules['tensorflow_datasets'] = None; sys.argv[0] = {module!r}; "
                       "runpy.run_module({module!r}, run_name='__main__')")


def _run_without_tensorflow(module: str, *args: str) -> subprocess.CompletedProcess:
  return subprocess.run(
      [sys.executable, "-c", _WITHOUT_TENSORFLOW.format(module=module), *args],
      cwd=REPO, capture_output=True, text=True, timeout=600, check=False)


def test_model_losses_and_train_step_import_without_tensorflow():
  code = ("import sys\n"
          "sys.modules['tensorflow'] = None; sys.modules['tensorflow_datasets'] = None\n"
          "from bert_jax.model import losses, modeling\n"
          "from bert_jax.pretraining import train_program\n"
          "assert 'tensorflow' not in {m.split('.')[0] for m, v in sys.modules.items() if v}\n")
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-2000:]


def test_smoke_runs_every_section_on_cpu_without_tensorflow(tmp_path):
  result = _run_without_tensorflow("bench.device_check", "--smoke", "--steps=2", "--warmup=1",
                                   f"--output_dir={tmp_path}")
  assert result.returncode == 0, result.stderr[-4000:]
  report = json.loads((tmp_path / "device_check.json").read_text())
  assert report["failures"] == [] and "section_status" not in report

  environment = report["environment"]
  assert environment["platform"] == "cpu" and environment["measured_peak_tflops"] > 0
  assert environment["versions"]["jax"] and environment["versions"]["torch"] != "not installed"

  numerics = report["numerics"]
  assert numerics["cudnn_bfloat16"] == device_rows.NEEDS_GPU
  for name, error in numerics["xla_bfloat16"].items():
    # bf16 really ran (not float32 again) and stayed close to the float32 reference.
    assert 0 < error["relative"] < 0.05, (name, error)

  rows = {(row["framework"], row["attention"]): row for row in report["rows"]}
  assert set(rows) == {("bert_jax", "xla"), ("bert_jax", "cudnn"), ("torch", "sdpa"),
                       ("torch.compile", "sdpa")}
  assert rows["bert_jax", "cudnn"]["status"] == device_rows.NEEDS_GPU
  for key in (("bert_jax", "xla"), ("torch", "sdpa"), ("torch.compile", "sdpa")):
    row = rows[key]
    assert row["status"] == "ok" and row["ms_per_step"] > 0 and row["mfu_measured"] > 0, row
    assert row["shape"] == "tiny:64:4"
  assert rows["bert_jax", "xla"]["remat"] == "none"
  assert all(map(lambda loss: 0 < loss < 20, rows["bert_jax", "xla"]["loss_first_last"]))

  table = (tmp_path / "device_check.md").read_text()
  assert "| tiny:64:4 | bert_jax | xla | none |" in table
  assert "| tiny:64:4 | bert_jax | cudnn |  | skipped: needs a GPU |" in table
  assert table.strip() in result.stdout  # The same tables on stdout.
  assert "BERT-Large seq 512 MFU >= 55% of the measured peak: not measured" in report["targets"]


def test_a_failing_row_is_reported_and_fails_only_smoke_runs(tmp_path):
  # 'splash' on a CPU is refused by the config checks, before anything compiles.
  common = ["--sections=throughput", "--frameworks=bert_jax", "--attention=splash",
            "--shapes=tiny:64:4"]
  assert device_check.main([*common, f"--output_dir={tmp_path}/full"]) == 0
  assert device_check.main([*common, "--smoke", f"--output_dir={tmp_path}/smoke"]) == 1
  for run in ("full", "smoke"):
    report = json.loads((tmp_path / run / "device_check.json").read_text())
    (row,) = report["rows"]
    assert row["status"].startswith("error: UserError: model.attention='splash' runs only on TPU")
    assert report["failures"] == [f"tiny:64:4 bert_jax splash: {row['status']}"]


def test_nothing_runs_past_the_time_budget(tmp_path):
  assert device_check.main(["--smoke", "--time_budget_s=1e-9", f"--output_dir={tmp_path}"]) == 0
  report = json.loads((tmp_path / "device_check.json").read_text())
  assert report["section_status"] == {name: "skipped: time budget"
                                      for name in device_check.SECTIONS}
  assert report["rows"] == [] and "environment" not in report
  assert sorted(os.listdir(tmp_path)) == ["device_check.json", "device_check.md"]


def test_unknown_sections_and_shapes_are_usage_errors(tmp_path, capsys):
  for flag in ("--sections=environment,speed", "--shapes=huge:128:8"):
    with pytest.raises(SystemExit) as exit_info:
      device_check.main([flag, f"--output_dir={tmp_path}"])
    assert exit_info.value.code == 2
    assert flag.split("=")[0] in capsys.readouterr().err
  assert not os.listdir(tmp_path)


def test_targets_are_judged_from_the_rows():
  def row(framework, attention, seq_per_s, mfu=None):
    return {"shape": "large:512:32", "model": "large", "seq_length": 512, "batch_size": 32,
            "framework": framework, "attention": attention, "sequences_per_second": seq_per_s,
            "mfu_measured": mfu}
  results = {"rows": [row("bert_jax", "xla", 300, 0.50), row("bert_jax", "cudnn", 390, 0.60),
                      row("torch", "sdpa", 310)],
             "numerics": {"cudnn_within_bf16_tolerance": False}}
  assert device_report.targets(results) == [
      "BERT-Large seq 512 MFU >= 55% of the measured peak: met (60.0%, attention cudnn, batch 32)",
      "large:512:32: >= 1.3x transformers' PyTorch: missed (1.26x; best bert_jax cudnn vs torch)",
      "cuDNN attention within bf16 tolerance of xla: missed"]
