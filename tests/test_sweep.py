"""`config.sweep`: learning rates x seeds trained together by the real CLI, each member as its
run alone, the best on dev kept; SIGTERM and resume; a diverged member dropped.

tests/test_sweep_program.py checks the program itself for two families.
"""

import json
import os
import re

import numpy as np

# test_preemption's runs, and its fixture (a compile cache).
from test_preemption import (  # pylint: disable=unused-import
    _Run, _finetune_command, _preempt, _run, env)

_SWEEP = ["--config.sweep.learning_rates=1e-3,5e-4", "--config.sweep.seeds=2",
          "--config.model.dtype=float32"]


def _losses(workdir) -> dict[int, dict[str, float]]:
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  return {r["step"]: r for r in rows if r.get("split") == "train"}


def test_a_sweep_trains_each_member_as_its_run_alone_and_keeps_the_best(
    tmp_path, env, sentencepiece_model):
  workdir = tmp_path / "sweep"
  sweep = _run(_finetune_command(tmp_path, sentencepiece_model, str(workdir)) + _SWEEP, env,
               str(tmp_path / "sweep")).stdout()
  assert "Sweep: 4 members (learning rates 0.001, 0.0005; seeds 0, 1) trained together" in sweep
  # Member 3 is (5e-4, seed 1): the same run alone.
  alone_dir = tmp_path / "alone"
  _run(_finetune_command(tmp_path, sentencepiece_model, str(alone_dir)) + [
      "--config.train.learning_rate=5e-4", "--config.seed=1", "--config.model.dtype=float32"],
       env, str(tmp_path / "alone"))
  swept, alone = _losses(workdir), _losses(alone_dir)
  for step in range(1, 21):
    # Seen: 2.7e-7 relative (float32; the member on one device, the run alone split over two).
    np.testing.assert_allclose(swept[step]["loss/member_3"], alone[step]["loss"], rtol=1e-4)
  read = lambda path: [json.loads(line) for line in open(path)]
  ours = read(workdir / "predictions" / "step_120" / "member_3" / "validation.jsonl")
  theirs = read(alone_dir / "predictions" / "step_120" / "validation.jsonl")
  assert np.mean([a["prediction"] == b["prediction"] for a, b in zip(ours, theirs)]) >= 0.99

  state = json.loads((workdir / "sweep.json").read_text())
  assert [m["learning_rate"] for m in state["members"]] == [1e-3, 1e-3, 5e-4, 5e-4]
  assert all(len(history) == 1 for history in state["history"].values())  # The final eval.
  final = {i: h[-1]["eval"]["validation"]["accuracy"] for i, h in state["history"].items()}
  alone_accuracy = json.loads((alone_dir / "best.json").read_text())["value"]
  assert abs(final["3"] - alone_accuracy) <= 0.005
  best = json.loads((workdir / "best.json").read_text())
  assert best["value"] == max(final.values()) and final[str(best["member"])] == best["value"]
  table = (workdir / "sweep.md").read_text()
  assert re.search(r"^\| 0\.0005 \| \d\.\d{4} ± \d\.\d{4} \(2 seeds\) \| [23] \(seed [01]\)",
                   table, re.MULTILINE), table
  assert table.splitlines()[0] in sweep  # Printed too.
  assert "best" in os.listdir(workdir)  # The best member's params, for export and predict.
  assert (workdir / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_preempted_sweep_resumes_and_ends_as_an_uninterrupted_one(tmp_path, env,
                                                                    sentencepiece_model):
  reference = _Run(_finetune_command(tmp_path, sentencepiece_model, str(tmp_path / "ref"))
                   + _SWEEP, env, str(tmp_path / "ref"))
  command = _finetune_command(tmp_path, sentencepiece_model, str(tmp_path / "work")) + _SWEEP
  step = _preempt(command, env, str(tmp_path / "first"), after_step=5)
  resumed = _run(command, env, str(tmp_path / "second")).stdout()
  assert f"Resumed from the checkpoint at step {step} " in resumed
  assert reference.wait() == 0, reference.stderr()[-3000:]
  assert (tmp_path / "work" / "sweep.md").read_text() == (tmp_path / "ref" / "sweep.md").read_text()


def test_a_diverged_member_is_dropped_and_the_others_go_on(tmp_path, env, sentencepiece_model):
  workdir = tmp_path / "work"
  out = _run(_finetune_command(tmp_path, sentencepiece_model, str(workdir)) + [
      "--config.sweep.learning_rates=1e30,1e-3"], env, str(tmp_path / "run")).stdout()
  assert re.search(r"^Sweep: member 0 \(learning rate 1e\+30, seed 0\) dropped: a non-finite "
                   r"loss or gradient by step \d+", out, re.MULTILINE), out[-3000:]
  state = json.loads((workdir / "sweep.json").read_text())
  assert list(state["dropped"]) == ["0"] and state["best"]["member"] == 1
  assert "| 1e+30 | every seed dropped | - |" in (workdir / "sweep.md").read_text()
