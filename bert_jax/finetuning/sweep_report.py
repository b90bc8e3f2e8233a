"""What a sweep keeps and says: every member's evals, the best member, the dropped ones, and the
table of the result (finetuning/sweep.py's bookkeeping, as plain JSON in its checkpoints).

The state: {"members": [{learning_rate, seed}], "history": {member: [{step, eval}]},
"best": {member, learning_rate, seed, step, value, metric, eval}, "dropped": {member: why},
"metric", "split"}; members are named by their index, as strings (JSON's keys).
"""

import io
import json
import os
from typing import Any

import jax
import numpy as np

from bert_jax import files
from bert_jax.finetuning import finetune
from bert_jax.finetuning import sweep_program
from bert_jax.runtime import report


def new_state(members: tuple[sweep_program.Member, ...]) -> dict[str, Any]:
  return {"members": [{"learning_rate": m.learning_rate, "seed": m.seed} for m in members],
          "history": {str(i): [] for i in range(len(members))}, "best": {}, "dropped": {}}


def plan_line(members: tuple[sweep_program.Member, ...], mesh: jax.sharding.Mesh) -> str:
  rates = sorted({m.learning_rate for m in members}, reverse=True)
  seeds = sorted({m.seed for m in members})
  split = sweep_program.member_sharding(mesh, len(members)).spec[0] == "data"
  where = (f"split over the mesh's 'data' axis ({mesh.shape['data']} devices)" if split else
           "on every device")
  plural = "s" if len(members) > 1 else ""
  return (f"Sweep: {len(members)} member{plural} (learning rates "
          f"{', '.join(f'{r:g}' for r in rates)}; "
          f"seeds {', '.join(map(str, seeds))}) trained together as one program, {where}")


def _name(state: dict[str, Any], index: int) -> str:
  member = state["members"][index]
  return f"member {index} (learning rate {member['learning_rate']:g}, seed {member['seed']})"


def drop_diverged(state: dict[str, Any], bad: np.ndarray, step: int, nan_policy: str,
                  members: tuple[sweep_program.Member, ...]) -> None:
  """Drops from the ranking, with a line, each member with a step that was not finite
  (`bad`: [steps, members]); with nan_policy 'skip' such a step is only skipped."""
  del members  # The state names them.
  if nan_policy == "skip":
    return
  for index in np.flatnonzero(bad.any(axis=0)):
    if str(index) not in state["dropped"]:
      state["dropped"][str(index)] = f"a non-finite loss or gradient by step {step}"
      report.line(f"Sweep: {_name(state, int(index))} dropped: a non-finite loss or gradient "
                  f"by step {step} (its update was not applied); the others go on")


def ranked(state: dict[str, Any]) -> list[int]:
  """The members still ranked (not dropped)."""
  return [i for i in range(len(state["members"])) if str(i) not in state["dropped"]]


def record_eval(state: dict[str, Any], step: int, results: dict[str, Any], metric: str,
                split: str) -> None:
  """Adds an eval of every member; the best ranked one so far by `metric` on `split`."""
  state["metric"], state["split"] = metric, split
  for index, member_results in results.items():
    state["history"][index].append({"step": step, "eval": member_results})
  for index in ranked(state):
    value = results[str(index)][split][metric]
    if value > state["best"].get("value", -np.inf):
      state["best"] = {"member": index, **state["members"][index], "step": step,
                       "value": value, "metric": metric, "eval": results[str(index)]}


def eval_line(state: dict[str, Any], step: int, metric: str) -> str:
  values = [state["history"][str(i)][-1]["eval"][state["split"]][metric] for i in ranked(state)]
  best = state["best"]
  spread = f"{min(values):.4f}-{max(values):.4f}" if values else "none"
  return (f"Sweep eval at step {step}: {metric} {spread} over {len(values)} members; best so far "
          f"{_name(state, best['member'])}: {best['value']:.4f} at step {best['step']}"
          if best else f"Sweep eval at step {step}: every member dropped")


def table(state: dict[str, Any]) -> str:
  """Markdown: per learning rate, the final dev metric's mean ± std over its seeds and its best
  member; then the best member of the sweep."""
  metric, split = state["metric"], state["split"]
  lines = [f"| learning rate | {metric} ({split}, final), mean ± std over seeds | best member |",
           "|---|---|---|"]
  for rate in sorted({m["learning_rate"] for m in state["members"]}, reverse=True):
    members = [i for i in ranked(state) if state["members"][i]["learning_rate"] == rate]
    finals = [state["history"][str(i)][-1]["eval"][split][metric] for i in members]
    if not finals:
      lines.append(f"| {rate:g} | every seed dropped | - |")
      continue
    top = members[int(np.argmax(finals))]
    lines.append(f"| {rate:g} | {np.mean(finals):.4f} ± {np.std(finals):.4f} "
                 f"({len(finals)} seeds) | {top} (seed {state['members'][top]['seed']}): "
                 f"{max(finals):.4f} |")
  best = state["best"]
  if best:
    lines.append("")
    lines.append(f"Best: {_name(state, best['member'])}, {metric} {best['value']:.4f} at step "
                 f"{best['step']} (its params are the workdir's best/).")
  return "\n".join(lines)


def picture(state: dict[str, Any]) -> bytes | None:
  """A PNG of the dev metric against the step, a line per member (colour: its learning rate;
  dashed: dropped); None without matplotlib (the bench and test extras have it)."""
  try:
    # pylint: disable=import-outside-toplevel
    import matplotlib
    matplotlib.use("Agg")  # No display: a file.
    from matplotlib import pyplot
  except ImportError:
    return None
  metric, split = state["metric"], state["split"]
  rates = sorted({m["learning_rate"] for m in state["members"]}, reverse=True)
  figure, axes = pyplot.subplots(figsize=(7, 4.5))
  for index, member in enumerate(state["members"]):
    history = state["history"][str(index)]
    axes.plot([h["step"] for h in history], [h["eval"][split][metric] for h in history],
              marker="o", markersize=3, color=f"C{rates.index(member['learning_rate'])}",
              linestyle="--" if str(index) in state["dropped"] else "-",
              label=f"lr {member['learning_rate']:g}" if member["seed"] == min(
                  m["seed"] for m in state["members"]) else None)
  axes.set_xlabel("step")
  axes.set_ylabel(f"{metric} ({split})")
  axes.set_title(f"{len(state['members'])} members, best: member {state['best'].get('member')}")
  axes.legend(title="a line per seed")
  axes.grid(alpha=0.3)
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
  pyplot.close(figure)
  return buffer.getvalue()


def finish(workdir: str, state: dict[str, Any], metric: str) -> None:
  """The sweep's table (printed, and WORKDIR/sweep.md), sweep.json, its picture
  (WORKDIR/sweep.png) and best.json."""
  text = table(state)
  if jax.process_index() == 0:
    files.write_whole(os.path.join(workdir, "sweep.md"), (text + "\n").encode())
    files.write_whole(os.path.join(workdir, "sweep.json"),
                      (json.dumps(state, indent=1, sort_keys=True) + "\n").encode())
    png = picture(state)
    if png is None:
      report.line("No sweep.png: matplotlib is not installed (pip install matplotlib)")
    else:
      files.write_whole(os.path.join(workdir, "sweep.png"), png)
  for line in text.splitlines():
    report.line(line)
  if state["best"]:
    finetune.write_best(workdir, state["best"], metric)
