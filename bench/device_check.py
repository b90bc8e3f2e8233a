"""One prepared accelerator check: environment, attention numerics, train-step speed vs PyTorch.

    python -m bench.device_check --output_dir=/tmp/check            # a GPU, ~6 minutes
    python -m bench.device_check --output_dir=/tmp/check --smoke    # any CPU, tiny, ~30 s (CI)
    [--time_budget_s=360 --sections=environment,numerics,throughput,torch_compile
     --shapes=large:512:32,base:128:256,large:128:256,base:512:32 --attention=xla,cudnn
     --frameworks=bert_jax,torch --steps=10 --warmup=2]

Made for the few minutes a GPU is lent: the most important measurements first, a time budget
(checked before each row: a row that would not fit, by the time the last row of its model
took, is skipped and says so), and every section guarded, so that one failure prints its error
and the rest still run. What is measured is written after every row, so a run killed at its
limit still leaves its results. Sections, in order:

  environment    device, versions, XLA's bf16 matmul rate (the measured MFU denominator)
                 beside the datasheet's
  numerics       model.attention='cudnn' (bf16) and 'xla' (bf16) against 'xla' in float32 on
                 the same params and padded batch, dropout 0: outputs, loss, gradients
  throughput     per shape (preset:seq:batch), the project's real jitted train step
                 (train_program.build_program: AdamW, bf16 compute, float32 params, NaN guard,
                 donated state) with each attention, then transformers' BertForPreTraining
                 (bf16 autocast, SDPA, fused AdamW) on the same batch. Remat only where the
                 step does not fit without it (then dots_with_no_batch_dims_saveable, full).
                 MFU is bert_jax/model/flops.py's model FLOPs over the measured and datasheet peaks.
  packing        a fine-tuning step on sentences of real length (a median of ~20 tokens) at
                 --packing_shape: bert_jax with data.packing on and off, transformers padded
                 to each batch's longest sentence (bench/device_packing.py)
  sweep          K fine-tuning runs as one program (config.sweep) against the same K runs one
                 after another, at --sweep_shape with --sweep_members (bench/device_sweep.py)
  torch_compile  the first shape again with torch.compile, in a subprocess that is stopped
                 when the budget runs out

Writes DIR/device_check.json and DIR/device_check.md (the tables), prints the tables. With
--smoke (tiny model, CPU shapes, torch.compile's 'eager' backend) any error fails the run
(exit 1), except a row that says 'skipped: needs a GPU'. Nothing here imports TensorFlow.
"""

import os

# Before JAX starts its GPU client, which takes 75% of the memory by default: half for JAX, the
# rest for the PyTorch rows of this process and the torch.compile subprocess.
os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.5")

import argparse  # pylint: disable=wrong-import-position
import json  # pylint: disable=wrong-import-position
import subprocess  # pylint: disable=wrong-import-position
import sys  # pylint: disable=wrong-import-position
import time  # pylint: disable=wrong-import-position
import traceback  # pylint: disable=wrong-import-position


from bench import device_packing  # pylint: disable=wrong-import-position
from bench import device_report  # pylint: disable=wrong-import-position
from bench import device_rows  # pylint: disable=wrong-import-position
from bench import device_sweep  # pylint: disable=wrong-import-position
from bert_jax.model import flops  # pylint: disable=wrong-import-position

SECTIONS = ("environment", "numerics", "throughput", "packing", "sweep", "torch_compile")
GPU_SHAPES = "large:512:32,base:128:256,large:128:256,base:512:32"
SMOKE_SHAPES = "tiny:64:4"
# The packing section's shape: short sentences in rows of seq_length (GPU; --smoke).
GPU_PACKING_SHAPE, SMOKE_PACKING_SHAPE = "base:128:256", "tiny:64:8"
# The sweep section's shape and members: a small task's batch, the paper's 4 rates x 2 seeds.
GPU_SWEEP_SHAPE, SMOKE_SWEEP_SHAPE = "base:128:32", "tiny:64:4"
GPU_SWEEP_MEMBERS, SMOKE_SWEEP_MEMBERS = 8, 2
# Tried in order when a step does not fit in memory.
REMAT_FALLBACKS = ("none", "dots_with_no_batch_dims_saveable", "full")


class Check:
  """The run's results, its time budget, and the guard around each piece of work."""

  def __init__(self, args: argparse.Namespace):
    self.args = args
    self.start = time.perf_counter()
    self.results = {"command": " ".join(["python -m bench.device_check", *sys.argv[1:]]),
                    "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                    "smoke": args.smoke, "time_budget_s": args.time_budget_s, "rows": []}
    self.failures = []  # (what, error line) of every guarded piece that raised.
    self.row_seconds = {}  # Wall time of the last row of each model preset and framework.

  def elapsed(self) -> float:
    return time.perf_counter() - self.start

  def left(self) -> float:
    return self.args.time_budget_s - self.elapsed()

  def log(self, message: str) -> None:
    print(f"[{self.elapsed():5.0f}s] {message}", flush=True)

  def guarded(self, what: str, work, *work_args):
    """work(*work_args), or {'status': 'error: ...'} with the traceback on stderr."""
    try:
      return work(*work_args)
    except Exception as error:  # pylint: disable=broad-except
      traceback.print_exc()
      line = f"error: {type(error).__name__}: {(str(error).splitlines() or [''])[0][:300]}"
      self.failures.append((what, line))
      self.log(f"{what}: {line}")
      return {"status": line}

  def save(self) -> None:
    """The JSON and the markdown tables, each written whole under a temporary name first."""
    self.results["elapsed_s"] = round(self.elapsed(), 1)
    self.results["failures"] = [f"{what}: {line}" for what, line in self.failures]
    os.makedirs(self.args.output_dir, exist_ok=True)
    for name, text in (("device_check.json", json.dumps(self.results, indent=1, default=float)),
                       ("device_check.md", device_report.markdown(self.results))):
      path = os.path.join(self.args.output_dir, name)
      with open(path + ".tmp", "w") as f:
        f.write(text + "\n")
      os.replace(path + ".tmp", path)


def environment(check: Check) -> None:
  env = device_rows.environment()
  dtype, size = ("float32", 512) if check.args.smoke else ("bfloat16", 8192)
  env["measured_peak_tflops"] = device_rows.matmul_tflops(dtype, size)
  env["measured_peak_matmul"] = f"{dtype} {size}x{size} @ {size}x{size}, XLA"
  env["datasheet_peak_tflops"] = flops.datasheet_peak_tflops(env["device"], "bfloat16")
  check.results["environment"] = env
  check.log(f"{env['device']} ({env['platform']}): measured {env['measured_peak_tflops']:.1f} "
            f"TFLOP/s ({env['measured_peak_matmul']}), datasheet bf16 "
            f"{env['datasheet_peak_tflops']}")


def peaks(check: Check) -> dict:
  env = check.results.get("environment", {})
  return {"measured": env.get("measured_peak_tflops"),
          "datasheet": env.get("datasheet_peak_tflops")}


def numerics(check: Check) -> None:
  shape = device_rows.Shape.parse("tiny:64:4" if check.args.smoke else "base:128:8")
  check.results["numerics"] = result = device_rows.numerics(shape)
  for name in ("xla_bfloat16", "cudnn_bfloat16"):
    value = result[name]
    check.log(f"numerics {name}: " + (value if isinstance(value, str) else ", ".join(
        f"{key} {error['relative']:.1e}" for key, error in value.items())))


def _out_of_memory(row: dict) -> bool:
  return "RESOURCE_EXHAUSTED" in row.get("status", "") or "out of memory" in row.get(
      "status", "").lower()


def _fits_budget(check: Check, key: tuple) -> bool:
  """Whether a row like the last one of `key` (model, framework) still fits in the budget."""
  return check.row_seconds.get(key, 0.0) < check.left()


def _new_row(shape, framework: str, attention: str, **fields) -> dict:
  return {"shape": str(shape), "model": shape.preset, "seq_length": shape.seq_length,
          "batch_size": shape.batch_size, "framework": framework, "attention": attention,
          **fields}


def _row(check: Check, shape, framework: str, attention: str, work) -> dict:
  """One guarded, timed row; recorded and saved at once."""
  row = _new_row(shape, framework, attention)
  key = (shape.preset, framework)
  if not _fits_budget(check, key):
    row["status"] = f"skipped: time budget ({check.left():.0f} s left)"
  else:
    start = time.perf_counter()
    result = check.guarded(f"{shape} {framework} {attention}", work)
    check.row_seconds[key] = time.perf_counter() - start
    row.update({"status": "ok", **result})
  check.results["rows"].append(row)
  check.log(device_report.row_line(row))
  check.save()
  return row


def throughput(check: Check) -> None:
  args = check.args
  for text in args.shapes.split(","):
    shape = device_rows.Shape.parse(text)
    if "bert_jax" in args.frameworks:
      for attention in args.attention.split(","):
        if attention == "cudnn" and not device_rows.on_gpu():
          check.results["rows"].append(_new_row(shape, "bert_jax", attention,
                                                status=device_rows.NEEDS_GPU))
          continue
        for remat in REMAT_FALLBACKS:
          row = _row(check, shape, "bert_jax", attention,
                     lambda: device_rows.bert_jax_row(shape, attention, remat, args, peaks(check)))
          row["remat"] = remat
          if not _out_of_memory(row):
            break
    if "torch" in args.frameworks:
      _row(check, shape, "torch", "sdpa",
           lambda: device_rows.torch_row(shape, args, peaks(check)))


def packing_section(check: Check) -> None:
  """Packing on and off, and transformers, on the same batch of real-length sentences."""
  args = check.args
  shape = device_rows.Shape.parse(args.packing_shape)
  dtype = "float32" if args.smoke else "bfloat16"
  features = device_packing.sentence_features(shape.batch_size, shape.seq_length)
  check.results["packing"] = rows = []
  work = {"bert_jax packed": lambda: device_packing.bert_jax_row(shape.preset, features, True,
                                                                 args, dtype),
          "bert_jax unpacked": lambda: device_packing.bert_jax_row(shape.preset, features,
                                                                   False, args, dtype),
          "torch": lambda: device_packing.torch_row(shape.preset, features, args, dtype)}
  for name, measure in work.items():
    if name.split()[0] not in args.frameworks:
      continue
    row = {"shape": str(shape), "framework": name}
    if check.left() <= 0:
      row["status"] = "skipped: time budget"
    else:
      row.update({"status": "ok", **check.guarded(f"packing {name}", measure)})
    rows.append(row)
    check.log(f"packing {name}: " + (f"{row['sentences_per_second']:,.0f} sentences/s, "
                                     f"{row['rows']} rows, padding {row['padding']:.1%}"
                                     if "ms_per_step" in row else row["status"]))
    check.save()


def sweep_section(check: Check) -> None:
  """A sweep of K members against K runs alone, on a small task's batch."""
  args = check.args
  shape = device_rows.Shape.parse(args.sweep_shape)
  dtype = "float32" if args.smoke else "bfloat16"
  features = device_packing.sentence_features(shape.batch_size, shape.seq_length)
  row = {"shape": str(shape), "members": args.sweep_members}
  if check.left() <= 0:
    row["status"] = "skipped: time budget"
  else:
    row.update({"status": "ok", **check.guarded("sweep", device_sweep.sweep_row, shape.preset,
                                                features, args.sweep_members, args, dtype)})
  check.results["sweep"] = row
  check.log("sweep: " + (f"{row['members_per_second']:,.1f} members/s, {row['speedup']:.2f}x "
                         f"{row['members']} runs one after another" if "speedup" in row
                         else row["status"]))
  check.save()


def torch_compile(check: Check) -> None:
  """The first shape with torch.compile, in a subprocess stopped when the budget runs out."""
  shape = device_rows.Shape.parse(check.args.shapes.split(",")[0])
  timeout = check.left()

  def work():
    command = [sys.executable, "-m", "bench.device_check", f"--torch_compile_child={shape}",
               f"--torch_compile_backend={check.args.torch_compile_backend}",
               f"--steps={check.args.steps}", f"--warmup={check.args.warmup}",
               f"--peaks={json.dumps(peaks(check))}", f"--output_dir={check.args.output_dir}"]
    try:
      output = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
      return {"status": f"skipped: did not compile and run within the time budget "
                        f"({timeout:.0f} s)"}
    if output.returncode:
      sys.stderr.write(output.stderr[-3000:])
      raise RuntimeError(f"the torch.compile subprocess exited {output.returncode}: "
                         f"{(output.stderr.strip().splitlines() or [''])[-1]}")
    return json.loads(output.stdout.strip().splitlines()[-1])

  if timeout < 10:
    check.results["rows"].append(_new_row(
        shape, "torch.compile", "sdpa", status=f"skipped: time budget ({timeout:.0f} s left)"))
  else:
    _row(check, shape, "torch.compile", "sdpa", work)


def parse_args(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--output_dir", required=True, help="where the JSON and the tables go")
  parser.add_argument("--smoke", action="store_true",
                      help="tiny model and shapes on any device; any error fails the run")
  parser.add_argument("--time_budget_s", type=float, default=None,
                      help="soft limit on the whole run (default 360; 150 with --smoke)")
  parser.add_argument("--sections", default=",".join(SECTIONS))
  parser.add_argument("--shapes", default=None,
                      help=f"preset:seq:batch,... (default {GPU_SHAPES}; {SMOKE_SHAPES} with "
                           "--smoke)")
  parser.add_argument("--attention", default="xla,cudnn", help="bert_jax rows' model.attention")
  parser.add_argument("--sweep_shape", default=None,
                      help=f"the sweep section's preset:seq:batch (default {GPU_SWEEP_SHAPE}; "
                           f"--smoke: {SMOKE_SWEEP_SHAPE})")
  parser.add_argument("--sweep_members", type=int, default=None,
                      help=f"the sweep's members (default {GPU_SWEEP_MEMBERS}; --smoke: "
                           f"{SMOKE_SWEEP_MEMBERS})")
  parser.add_argument("--packing_shape", default=None,
                      help=f"the packing section's preset:seq:batch (default {GPU_PACKING_SHAPE};"
                           f" {SMOKE_PACKING_SHAPE} with --smoke)")
  parser.add_argument("--frameworks", default="bert_jax,torch")
  parser.add_argument("--steps", type=int, default=None, help="timed steps (default 10; 3)")
  parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
  parser.add_argument("--torch_threads", type=int, default=os.cpu_count())
  parser.add_argument("--torch_compile_backend", default=None,
                      help="default inductor; eager with --smoke (inductor's CPU compile takes "
                           "minutes)")
  parser.add_argument("--torch_compile_child", default=None, help=argparse.SUPPRESS)
  parser.add_argument("--peaks", default="{}", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  args.time_budget_s = args.time_budget_s or (150.0 if args.smoke else 360.0)
  args.shapes = args.shapes or (SMOKE_SHAPES if args.smoke else GPU_SHAPES)
  args.packing_shape = args.packing_shape or (SMOKE_PACKING_SHAPE if args.smoke
                                              else GPU_PACKING_SHAPE)
  args.sweep_shape = args.sweep_shape or (SMOKE_SWEEP_SHAPE if args.smoke else GPU_SWEEP_SHAPE)
  args.sweep_members = args.sweep_members or (SMOKE_SWEEP_MEMBERS if args.smoke
                                              else GPU_SWEEP_MEMBERS)
  args.steps = args.steps or (3 if args.smoke else 10)
  args.torch_compile_backend = args.torch_compile_backend or ("eager" if args.smoke
                                                              else "inductor")
  unknown = set(args.sections.split(",")) - set(SECTIONS)
  if unknown:
    parser.error(f"--sections: unknown {sorted(unknown)}; known: {', '.join(SECTIONS)}")
  for text in [*args.shapes.split(","), args.packing_shape, args.sweep_shape]:
    try:
      device_rows.Shape.parse(text)
    except ValueError as error:
      parser.error(f"--shapes: {error}")
  return args


def main(argv: list[str]) -> int:
  args = parse_args(argv)
  if args.torch_compile_child:  # One row for torch_compile(), as one JSON line.
    shape = device_rows.Shape.parse(args.torch_compile_child)
    row = device_rows.torch_row(shape, args, json.loads(args.peaks), args.torch_compile_backend)
    print(json.dumps(row, default=float))
    return 0
  check = Check(args)
  sections = {"environment": environment, "numerics": numerics, "throughput": throughput,
              "packing": packing_section, "sweep": sweep_section, "torch_compile": torch_compile}
  for name in args.sections.split(","):
    if check.left() <= 0:
      check.results.setdefault("section_status", {})[name] = "skipped: time budget"
      check.log(f"section {name}: skipped, the time budget is spent")
      continue
    check.log(f"section {name}")
    result = check.guarded(name, sections[name], check)
    if isinstance(result, dict):  # The section itself failed (rows fail on their own).
      check.results.setdefault("section_status", {})[name] = result["status"]
    check.save()
  check.results["targets"] = device_report.targets(check.results)
  check.save()
  print(device_report.markdown(check.results), flush=True)
  if args.smoke and check.failures:
    print(f"--smoke: {len(check.failures)} failure(s): "
          + "; ".join(f"{what}: {line}" for what, line in check.failures), file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
