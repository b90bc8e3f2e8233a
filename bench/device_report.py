"""bench/device_check.py's results as markdown tables, and the verdict on each target.

Pure functions of the results dict (the same dict as device_check.json), so that a JSON from a
lent GPU can be turned into tables again anywhere.
"""

# The GPU targets (docs/BENCHMARKS.md, "Targets").
MFU_TARGET = 0.55  # BERT-Large, seq 512, bf16: MFU against the measured matmul peak.
TORCH_RATIO_TARGET = 1.3  # bert_jax's sequences/s over transformers' PyTorch, same shapes.


def row_line(row: dict) -> str:
  """One line per row for the progress log."""
  what = f"{row['shape']} {row['framework']} {row.get('attention', '')}".strip()
  if "ms_per_step" not in row:
    return f"{what}: {row['status']}"
  mfu = row.get("mfu_measured")
  return (f"{what}: {row['ms_per_step']:.1f} ms/step, {row['sequences_per_second']:,.0f} seq/s"
          + (f", MFU {mfu:.1%} of measured peak" if mfu is not None else "")
          + (f", compile {row['compile_seconds']:.0f} s" if "compile_seconds" in row else ""))


def _best(rows: list[dict], shape: str, frameworks: tuple[str, ...]) -> dict | None:
  timed = [r for r in rows if r["shape"] == shape and r["framework"] in frameworks
           and "sequences_per_second" in r]
  return max(timed, key=lambda r: r["sequences_per_second"], default=None)


def targets(results: dict) -> list[str]:
  """'met' / 'missed' / 'not measured' for each target, with its figures."""
  rows = results.get("rows", [])
  lines = []
  large = [r["shape"] for r in rows if r.get("model") == "large" and r.get("seq_length") == 512]
  best = _best(rows, large[0], ("bert_jax",)) if large else None
  if best is None or best.get("mfu_measured") is None:
    lines.append(f"BERT-Large seq 512 MFU >= {MFU_TARGET:.0%} of the measured peak: not measured")
  else:
    verdict = "met" if best["mfu_measured"] >= MFU_TARGET else "missed"
    lines.append(f"BERT-Large seq 512 MFU >= {MFU_TARGET:.0%} of the measured peak: {verdict} "
                 f"({best['mfu_measured']:.1%}, attention {best['attention']}, batch "
                 f"{best['batch_size']})")
  for shape in dict.fromkeys(r["shape"] for r in rows):
    ours, torch = _best(rows, shape, ("bert_jax",)), _best(rows, shape, ("torch",
                                                                          "torch.compile"))
    if ours and torch:
      ratio = ours["sequences_per_second"] / torch["sequences_per_second"]
      verdict = "met" if ratio >= TORCH_RATIO_TARGET else "missed"
      lines.append(f"{shape}: >= {TORCH_RATIO_TARGET}x transformers' PyTorch: {verdict} "
                   f"({ratio:.2f}x; best bert_jax {ours['attention']} vs {torch['framework']})")
  numerics = results.get("numerics", {})
  within = numerics.get("cudnn_within_bf16_tolerance")
  lines.append("cuDNN attention within bf16 tolerance of xla: "
               + ("not measured" if within is None else "met" if within else "missed"))
  return lines


def _format(value, spec: str) -> str:
  return "" if value is None else format(value, spec)


def markdown(results: dict) -> str:
  """Environment, numerics, throughput, packing, sweep and targets, as markdown."""
  lines = [f"Command: `{results['command']}`, {results['date']}, "
           f"{results.get('elapsed_s', 0):.0f} s of a {results['time_budget_s']:.0f} s budget."]
  env = results.get("environment")
  if env:
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    lines += ["", "| environment | |", "|---|---|",
              f"| device | {env['device']} ({env['platform']}) x{env['device_count']} |",
              f"| measured matmul peak | {env['measured_peak_tflops']:.1f} TFLOP/s "
              f"({env['measured_peak_matmul']}) |",
              f"| datasheet bf16 peak | "
              f"{_format(env['datasheet_peak_tflops'], '.0f') or 'unknown'} TFLOP/s |",
              f"| versions | {versions} |"]
  numerics = results.get("numerics")
  if numerics:
    lines += ["", f"Numerics at {numerics['shape']} against xla float32 (relative L2 error / "
                  "max abs error):", "",
              "| | " + " | ".join(numerics["compared"]) + " |",
              "|---|" + "---|" * len(numerics["compared"])]
    for name in ("xla_bfloat16", "cudnn_bfloat16"):
      value = numerics[name]
      cells = ([value] + [""] * (len(numerics["compared"]) - 1) if isinstance(value, str) else
               [f"{value[k]['relative']:.1e} / {value[k]['max_abs']:.1e}"
                for k in numerics["compared"]])
      lines.append(f"| {name} | " + " | ".join(cells) + " |")
  rows = results.get("rows", [])
  if rows:
    lines += ["", "| shape | framework | attention | remat | compile/warmup s | ms/step (p10-p90)"
                  " | seq/s | tokens/s | MFU measured | MFU datasheet | vs torch | memory GiB |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
      head = (f"| {row['shape']} | {row['framework']} | {row.get('attention', '')} | "
              f"{row.get('remat', '')} |")
      if "ms_per_step" not in row:
        lines.append(f"{head} {row['status']} | | | | | | | |")
        continue
      torch = _best(rows, row["shape"], ("torch",))
      ratio = (f"{row['sequences_per_second'] / torch['sequences_per_second']:.2f}x"
               if torch and row["framework"] != "torch" else "")
      lines.append(
          f"{head} {_format(row.get('compile_seconds'), '.1f')} | {row['ms_per_step']:,.1f} "
          f"({row['ms_p10']:,.1f}-{row['ms_p90']:,.1f}) | {row['sequences_per_second']:,.0f} | "
          f"{row['tokens_per_second']:,.0f} | {_format(row.get('mfu_measured'), '.1%')} | "
          f"{_format(row.get('mfu_datasheet'), '.1%')} | {ratio} | "
          f"{_format(row.get('memory_gib'), '.1f')} |")
    notes = sorted({row["note"] for row in rows if "note" in row})
    lines += [""] + [f"- {note}" for note in notes]
  packed = results.get("packing", [])
  if packed:
    lines += ["", f"Packing: a fine-tuning step on {packed[0]['shape']} sentences of real length"
                  " (finetuning/data/packing.py on and off; torch padded to the batch's longest):",
              "", "| framework | rows | padding | ms/step | sentences/s | vs torch |",
              "|---|---|---|---|---|---|"]
    torch = next((r for r in packed if r["framework"] == "torch" and "ms_per_step" in r), None)
    for row in packed:
      if "ms_per_step" not in row:
        lines.append(f"| {row['framework']} | {row['status']} | | | | |")
        continue
      ratio = (f"{row['sentences_per_second'] / torch['sentences_per_second']:.2f}x"
               if torch and row is not torch else "")
      lines.append(f"| {row['framework']} | {row['rows']} | {row['padding']:.1%} | "
                   f"{row['ms_per_step']:,.1f} | {row['sentences_per_second']:,.0f} | {ratio} |")
  sweep = results.get("sweep")
  if sweep:
    lines += ["", f"Sweep: {sweep['members']} fine-tuning runs as one program (config.sweep) vs "
                  f"the same runs one after another, {sweep['shape']}:", "",
              "| run alone ms/step | sweep ms/step | members/s | vs one after another |",
              "|---|---|---|---|"]
    lines.append(f"| {sweep['alone_ms']:,.1f} | {sweep['sweep_ms']:,.1f} | "
                 f"{sweep['members_per_second']:,.1f} | {sweep['speedup']:.2f}x |"
                 if "speedup" in sweep else f"| {sweep['status']} | | | |")
  if results.get("targets"):
    lines += ["", "Targets:", ""] + [f"- {line}" for line in results["targets"]]
  skipped = results.get("section_status")
  if skipped:
    lines += ["", "Sections: " + "; ".join(f"{name}: {status}" for name, status in skipped.items())]
  failures = results.get("failures")
  if failures:
    lines += ["", "Failures:", ""] + [f"- {line}" for line in failures]
  return "\n".join(lines)
