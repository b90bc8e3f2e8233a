"""Compile time vs depth (scanned vs unrolled layers) and memory vs remat policy, on this CPU.

    python -m bench.compile depth [--depths=3,6,12,24] [--batch_size=8] [--seq_length=128]
    python -m bench.compile remat [--batch_size=8] [--seq_length=512] [--layers=24]

The real pre-training step of BERT-Large (H1024/A16/I4096, vocab 30522, 20 predictions per
128 tokens) is lowered with abstract arguments (jax.ShapeDtypeStruct: nothing is allocated)
and compiled by XLA for one CPU device. `depth` times lowering and compiling at each depth with
model.scan_layers on and off. `remat` reports XLA's buffer assignment of the compiled step
(`memory_analysis()`): the temporaries (activations kept for the backward pass, workspace) and
the peak = arguments + temporaries + outputs not aliased to a donated argument.
"""

import argparse
import functools
import time

import jax

from bert_jax.model import modeling
from bert_jax.pretraining import train_program
from bert_jax.runtime import optim
from bert_jax.runtime import train_state
from configs import large


def _config(layers: int, seq_length: int, **model_overrides):
  config = large.get_config()
  config.model.dtype = "float32"  # As measured since issue 5 (not the host's 'auto').
  config.model.num_hidden_layers = layers
  config.model.update(model_overrides)
  config.data.max_seq_length = seq_length
  config.data.max_predictions_per_seq = max(1, round(seq_length * 0.15))
  return config


def _lower(config, batch_size: int):
  model = modeling.BertForPreTraining(modeling.BertConfig.from_config(config.model))
  tx = optim.create_optimizer(config.train)
  batch = jax.eval_shape(functools.partial(
      train_program.dummy_batch, batch_size, config.data.max_seq_length,
      config.data.max_predictions_per_seq))
  shapes = train_program.dummy_batch(1, config.data.max_seq_length,
                                     config.data.max_predictions_per_seq)
  state = jax.eval_shape(functools.partial(
      train_state.create_train_state, model=model, tx=tx, batch=shapes), jax.random.key(0))
  step = jax.jit(functools.partial(train_program.train_step, model=model, tx=tx),
                 donate_argnums=(0,))
  return step.lower(state, batch, jax.random.key(1))


def depth(args) -> None:
  print(f"BERT-Large train step, batch {args.batch_size} x seq {args.seq_length}, "
        f"{jax.devices()[0].device_kind}; seconds")
  print("| layers | scan: lower | scan: compile | unrolled: lower | unrolled: compile |")
  print("|---|---|---|---|---|")
  for layers in (int(d) for d in args.depths.split(",")):
    row = [str(layers)]
    for scan_layers in (True, False):
      config = _config(layers, args.seq_length, scan_layers=scan_layers)
      start = time.perf_counter()
      lowered = _lower(config, args.batch_size)
      lowered_at = time.perf_counter()
      lowered.compile()
      row += [f"{lowered_at - start:.1f}", f"{time.perf_counter() - lowered_at:.1f}"]
    print("| " + " | ".join(row) + " |", flush=True)


def remat(args) -> None:
  gib = 2.0 ** 30
  print(f"BERT-Large ({args.layers} layers) train step, batch {args.batch_size} x seq "
        f"{args.seq_length}, float32, {jax.devices()[0].device_kind}; GiB per device")
  print("| remat_policy | arguments | temporaries | peak | compile s |")
  print("|---|---|---|---|---|")
  for policy in modeling.REMAT_POLICIES:
    config = _config(args.layers, args.seq_length, remat_policy=policy)
    start = time.perf_counter()
    compiled = _lower(config, args.batch_size).compile()
    seconds = time.perf_counter() - start
    memory = compiled.memory_analysis()
    peak = (memory.argument_size_in_bytes + memory.temp_size_in_bytes
            + memory.output_size_in_bytes - memory.alias_size_in_bytes)
    print(f"| {policy} | {memory.argument_size_in_bytes / gib:.2f} | "
          f"{memory.temp_size_in_bytes / gib:.2f} | {peak / gib:.2f} | {seconds:.1f} |",
          flush=True)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  commands = parser.add_subparsers(dest="command", required=True)
  depth_parser = commands.add_parser("depth", help="compile time vs depth, scan vs unrolled")
  depth_parser.add_argument("--depths", default="3,6,12,24")
  depth_parser.add_argument("--batch_size", type=int, default=8)
  depth_parser.add_argument("--seq_length", type=int, default=128)
  remat_parser = commands.add_parser("remat", help="memory vs remat policy")
  remat_parser.add_argument("--layers", type=int, default=24)
  remat_parser.add_argument("--batch_size", type=int, default=8)
  remat_parser.add_argument("--seq_length", type=int, default=512)
  args = parser.parse_args()
  {"depth": depth, "remat": remat}[args.command](args)


if __name__ == "__main__":
  main()
