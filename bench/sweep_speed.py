"""A sweep's K members in one compiled program vs one run alone, and how busy one run keeps the
CPU (the ceiling a sweep can fill).

    python -m bench.sweep_speed                        # the quickstart's model, K = 8 seeds
    python -m bench.sweep_speed --preset=minilm --learning_rates=4 --seeds=3
    [--batch_size=32 --seq_length=64 --steps=20 --warmup=3]

Both sides fine-tune a classifier (3 labels) from a random init on the same random rows of
varied real lengths, unpacked, as `bert_jax.main` would at this size: the compute dtype
'auto' picks here, one jax CPU device per core (mesh.cpu_devices=0), the run alone
data-parallel over them (finetune_program), the sweep with its members split over them
(sweep_program). A step is timed until its loss is on the host; the median of --steps steps
after --warmup (compiles included there), the two sides alternating in this process.

Busy = process CPU time / (wall time x cores) over the timed steps: how much of the machine a
side keeps at work. Printed: seconds per step of each side, K x the run alone's (the members
one after another), and the ratio.
"""

import argparse
import os
import statistics
import time

import jax

from bert_jax import backends

backends.skip_tpu_without_chips()  # Before the backend starts, as the commands do.
# One device per core, before the backend starts: what fine-tuning's mesh.cpu_devices=0 does.
jax.config.update("jax_num_cpu_devices", os.cpu_count() or 1)

# pylint: disable=wrong-import-position
import flax.linen as nn
import numpy as np

from bert_jax.config import finetune as finetune_config
from bert_jax.finetuning import finetune_program
from bert_jax.finetuning import sweep_program
from bert_jax.model import compute_dtype
from bert_jax.model import modeling
from bert_jax.runtime import sharding
from bert_jax.runtime import train_state

PRESETS = {
    # /tmp/qs_tiny's architecture (docs/quickstart.md), its vocabulary of 4000.
    "quickstart": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=512, vocab_size=4000),
    # MiniLM-L6-H384's shape (all-MiniLM-L6-v2), BERT's vocabulary.
    "minilm": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                   intermediate_size=1536, vocab_size=30522),
}
NUM_LABELS = 3


def _config(args):
  config = finetune_config.get_config()
  config.model.update(**PRESETS[args.preset], max_position_embeddings=512)
  config.model.dtype = compute_dtype.choose("auto", "cpu")[0]
  config.data.max_seq_length = args.seq_length
  config.train.update(batch_size=args.batch_size, num_train_steps=1000, num_warmup_steps=100,
                      learning_rate=5e-5)
  config.mesh.data = jax.device_count()
  return config


def _features(args, vocab_size: int, num_rows: int = 512) -> dict[str, np.ndarray]:
  """Rows of varied real lengths (from a quarter to all of seq_length), padded."""
  rng = np.random.default_rng(0)
  lengths = rng.integers(args.seq_length // 4, args.seq_length + 1, num_rows)
  mask = (np.arange(args.seq_length)[None, :] < lengths[:, None]).astype(np.int32)
  ids = rng.integers(1000, vocab_size, (num_rows, args.seq_length)).astype(np.int32) * mask
  return {"input_ids": ids, "input_mask": mask, "segment_ids": np.zeros_like(ids),
          "label_ids": rng.integers(0, NUM_LABELS, num_rows).astype(np.int32)}


def _alone(config, model_config, features):
  """A run alone: its state and a step function (step -> loss on the host)."""
  mesh = sharding.create_mesh(config.mesh)
  rules = sharding.logical_axis_rules(config)
  example = {k: v[:1] for k, v in features.items()}
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    program = finetune_program.build_program(config, mesh, rules, model_config,
                                             "classification", NUM_LABELS, example)
    init_rng, dropout_rng = jax.random.split(train_state.root_key(config))
    state = jax.jit(lambda key: train_state.create_train_state(key, program.model, program.tx,
                                                               example),
                    out_shardings=program.state_shardings)(init_rng)
  holder = {"state": state}

  def step(i: int) -> float:
    indices = finetune_program.batch_indices(len(features["input_ids"]),
                                             config.train.batch_size, i, config.seed)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      holder["state"], metrics = program.train_step(
          holder["state"], {k: v[indices] for k, v in features.items()}, dropout_rng)
    return float(metrics["loss"])
  return step


def _sweep(config, model_config, features, grid):
  mesh = sharding.create_mesh(config.mesh)
  program = sweep_program.build_sweep_program(config, model_config, "classification",
                                              NUM_LABELS, grid, mesh)
  example = {k: v[:1] for k, v in features.items()}
  started = [program.init_state(member, example, config) for member in grid]
  holder = {"states": sweep_program.stack_states([s for s, _ in started])}
  rngs = sweep_program.stack([r for _, r in started])

  def step(i: int) -> float:
    holder["states"], metrics = program.train_step(
        holder["states"], program.batches(features, config.train.batch_size, i), rngs,
        program.learning_rates)
    return float(np.mean(np.asarray(metrics["loss"])))
  return step


def _time(steps, args) -> dict[str, dict[str, float]]:
  """Median seconds per step and busy fraction of each side, alternating step by step."""
  for i in range(args.warmup):
    for step in steps.values():
      step(i)
  times = {name: [] for name in steps}
  cpu = {name: 0.0 for name in steps}
  wall = {name: 0.0 for name in steps}
  for i in range(args.warmup, args.warmup + args.steps):
    for name, step in steps.items():
      cpu_start, start = time.process_time(), time.perf_counter()
      step(i)
      elapsed = time.perf_counter() - start
      times[name].append(elapsed)
      cpu[name] += time.process_time() - cpu_start
      wall[name] += elapsed
  cores = os.cpu_count() or 1
  return {name: {"seconds": statistics.median(times[name]),
                 "busy": cpu[name] / (wall[name] * cores)} for name in steps}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--preset", choices=sorted(PRESETS), default="quickstart")
  parser.add_argument("--learning_rates", type=int, default=1,
                      help="How many learning rates (BERT's grid: 5e-5, 4e-5, 3e-5, 2e-5).")
  parser.add_argument("--seeds", type=int, default=8, help="Restarts per learning rate.")
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--seq_length", type=int, default=64)
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--warmup", type=int, default=3)
  args = parser.parse_args()

  config = _config(args)
  model_config = modeling.BertConfig.from_config(config.model)
  features = _features(args, model_config.vocab_size)
  grid = sweep_program.members([5e-5, 4e-5, 3e-5, 2e-5][:args.learning_rates],
                               range(args.seeds))
  results = _time({"alone": _alone(config, model_config, features),
                   "sweep": _sweep(config, model_config, features, grid)}, args)
  k = len(grid)
  alone, sweep = results["alone"], results["sweep"]
  print(f"{args.preset} (L{model_config.num_hidden_layers}/H{model_config.hidden_size}), "
        f"{config.model.dtype}, batch {args.batch_size} x seq {args.seq_length}, "
        f"{jax.device_count()} CPU devices, K = {k} members")
  print(f"run alone: {alone['seconds'] * 1e3:.1f} ms/step, busy {alone['busy']:.0%} of the "
        f"cores")
  print(f"sweep of {k}: {sweep['seconds'] * 1e3:.1f} ms/step, busy {sweep['busy']:.0%}; "
        f"= {sweep['seconds'] / alone['seconds']:.2f}x one run's step time; "
        f"{k} runs one after another: {k:.0f}x; "
        f"speed-up {k * alone['seconds'] / sweep['seconds']:.2f}x")


if __name__ == "__main__":
  main()
