"""Steady-state train step of bert_jax vs transformers' BERT (PyTorch, and Flax where it runs).

    python -m bench.train_step --preset=small            # L4/H256/A4/I1024, vocab 30522
    python -m bench.train_step --preset=base --steps=10  # BERT-Base (L12/H768/A12/I3072)
    [--batch_size=8 --seq_length=128 --predictions=20 --steps=30 --warmup=3
     --frameworks=bert_jax,torch,flax --isolate --scan_layers=true|false
     --rng_impl=threefry2x32|rbg|unsafe_rbg]   (the last two: bert_jax's config, see
                                                 docs/BENCHMARKS.md for what they buy)
    python -m bench.train_step --preset=small --breakdown   # where the step's time goes
    python -m bench.train_step --preset=base --profile --steps=3   # bert_jax's time per XLA op

Every framework trains the same model config (post-LN BERT, erf GELU, dropout 0.1 on hidden
states and attention probabilities, float32) on the same host batch: the same token ids,
padding, segments, masked positions (their input ids replaced by [MASK]) and NSP labels, with
AdamW (weight decay 0.01, none on biases and LayerNorm) after clipping the global gradient norm
to 1.0:

  bert_jax  `train_program.train_step` as a run jits it (state donated; its warmup/decay
            schedule, its NaN guard); the MLM head on the gathered masked positions only.
  torch     `transformers.BertForPreTraining` with `labels` (-100 except at the masked positions)
            and `next_sentence_label`, `torch.optim.AdamW`, torch.set_num_threads(--torch_threads,
            2 by default = the cores here). As users run it, HF's MLM head (transform + the
            [hidden, vocab] decoder) runs on every token, not only the masked ones.
  flax      transformers' `FlaxBertForPreTraining` (4.57.6 was the last release with Flax models;
            transformers 5, which the test extra installs, has none, so it is skipped there),
            jitted as its run_mlm_flax.py example does (`train=True`, a dropout rng), optax
            clip + adamw; it too has the MLM head on every token. Skipped with the reason if it
            does not import or run.

A step is timed from the call until its loss is on the host (jax: block_until_ready; torch is
synchronous), `--warmup` steps first (they include jax's compile), then the median and p10/p90
of `--steps` steps. Frameworks run one after another in this process; `--isolate` runs each
in its own subprocess instead, to check that one's thread pools do not slow another.
`--breakdown` times, for bert_jax and torch, the forward pass with the loss alone, forward +
backward, and the whole step, so that the difference shows what the backward pass and the
optimizer update (with clipping) cost. `--profile` traces bert_jax's steps with jax.profiler
and sums the time of each XLA op (thunk) over the CPU runtime's threads, by kind and the top ops
with the source op they come from.

FLOPs are bert_jax/model/flops.py's model FLOPs (3x the forward matmuls, MLM head on the masked
positions only), the same numerator for every framework: the extra vocabulary projection that
HF computes on the unmasked tokens is work it does beyond them (its own matmul FLOPs are printed
too). On a CPU the achieved GFLOP/s is compared with XLA's own fp32 matmul rate on this machine
(4096x512 @ 512x512, measured here), not with a datasheet peak; on an accelerator MFU is against
the datasheet peak of its device kind (bert_jax/model/flops.py PEAK_TFLOPS).
"""

import argparse
import functools
import json
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bench import harness
from bench import xla_profile
from bert_jax.model import flops
from bert_jax.model import modeling
from bert_jax.pretraining import train_program
from bert_jax.pretraining.data import synthetic
from bert_jax.runtime import optim
from bert_jax.runtime import train_state

MASK_ID = 103  # [MASK] in Google's uncased vocabulary; any id works for timing.


def bert_jax_step(config, batch):
  """(the jitted step, its initial state): what the timing and the profile both run."""
  model = modeling.BertForPreTraining(modeling.BertConfig.from_config(config.model))
  tx = optim.create_optimizer(config.train)
  state = jax.jit(functools.partial(train_state.create_train_state, model=model, tx=tx,
                                    batch=batch))(jax.random.key(0))
  step = jax.jit(functools.partial(train_program.train_step, model=model, tx=tx),
                 donate_argnums=(0,))
  return step, state


def run_bert_jax(config, batch, args) -> tuple[np.ndarray, str]:
  step, state = bert_jax_step(config, batch)
  device_batch = jax.device_put(batch)
  rng = train_state.root_key(config)

  def one_step():
    nonlocal state
    state, metrics = step(state, device_batch, rng)
    metrics["loss"].block_until_ready()

  return harness.time_calls(one_step, args.warmup, args.steps), (
      f"scan_layers={config.model.scan_layers}, remat={config.model.remat_policy}, "
      f"rng_impl={config.rng_impl}")


def run_torch(config, batch, args) -> tuple[np.ndarray, str]:
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel

  device = harness.torch_device(args)
  model = transformers.BertForPreTraining(
      transformers.BertConfig(**harness.hf_config_dict(config))).to(device).train()
  inputs = {
      **harness.torch_inputs(batch, device),
      "labels": torch.tensor(harness.hf_mlm_labels(batch), device=device),
      "next_sentence_label": torch.tensor(batch["next_sentence_labels"], dtype=torch.long,
                                          device=device),
  }
  return harness.time_torch_training(model, inputs, config, args)


def run_flax(config, batch, args) -> tuple[np.ndarray, str]:
  import optax  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel

  model = transformers.FlaxBertForPreTraining(
      transformers.BertConfig(**harness.hf_config_dict(config)), seed=0, dtype=jnp.float32)
  labels = harness.hf_mlm_labels(batch)
  inputs = jax.device_put({
      "input_ids": batch["input_ids"], "attention_mask": batch["input_mask"],
      "token_type_ids": batch["segment_ids"], "labels": np.maximum(labels, 0).astype(np.int32),
      "label_weights": (labels >= 0).astype(np.float32),
      "next_sentence_label": batch["next_sentence_labels"]})

  def loss_fn(params, inputs, dropout_rng):
    outputs = model(inputs["input_ids"], inputs["attention_mask"], inputs["token_type_ids"],
                    params=params, dropout_rng=dropout_rng, train=True)
    # As HF's torch loss: cross-entropy over every token's logits, -100 (weight 0) ignored.
    mlm = optax.softmax_cross_entropy_with_integer_labels(
        outputs.prediction_logits, inputs["labels"])  # [batch, length]
    mlm = jnp.sum(mlm * inputs["label_weights"]) / jnp.sum(inputs["label_weights"])
    nsp = optax.softmax_cross_entropy_with_integer_labels(
        outputs.seq_relationship_logits, inputs["next_sentence_label"]).mean()
    return mlm + nsp

  seconds = harness.time_optax_training(loss_fn, model.params, config, inputs, args)
  return seconds, f"transformers {transformers.__version__}"


def breakdown(config, batch, args) -> None:
  """Median ms of forward (+ loss), forward + backward, and the whole step: bert_jax and torch."""
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  from bert_jax.model import losses  # pylint: disable=import-outside-toplevel

  def median_ms(step):
    return 1e3 * np.median(harness.time_calls(step, args.warmup, args.steps))

  model = modeling.BertForPreTraining(modeling.BertConfig.from_config(config.model))
  params = jax.jit(functools.partial(train_state.init_params, model=model, batch=batch))(
      jax.random.key(0))
  params = jax.device_put(nn.meta.unbox(params))
  device_batch = jax.device_put(batch)

  def loss_fn(params, batch, rng):
    mlm_logits, nsp_logits = model.apply(
        {"params": params}, batch["input_ids"], batch["segment_ids"], batch["input_mask"],
        batch["masked_lm_positions"], deterministic=False, rngs={"dropout": rng})
    return losses.pretraining_loss(mlm_logits, nsp_logits, batch)[0]

  forward = jax.jit(loss_fn)
  backward = jax.jit(jax.grad(loss_fn))
  rng = train_state.root_key(config)
  jax_ms = [median_ms(lambda: forward(params, device_batch, rng).block_until_ready()),
            median_ms(lambda: jax.block_until_ready(backward(params, device_batch, rng)))]
  jax_ms.append(np.median(run_bert_jax(config, batch, args)[0]) * 1e3)

  torch.set_num_threads(args.torch_threads)
  torch_model = transformers.BertForPreTraining(
      transformers.BertConfig(**harness.hf_config_dict(config))).train()
  inputs = {
      **harness.torch_inputs(batch, "cpu"),
      "labels": torch.tensor(harness.hf_mlm_labels(batch)),
      "next_sentence_label": torch.tensor(batch["next_sentence_labels"], dtype=torch.long)}

  def torch_forward():
    with torch.no_grad():
      torch_model(**inputs).loss.item()

  def torch_backward():
    torch_model.zero_grad(set_to_none=True)
    torch_model(**inputs).loss.backward()

  torch_ms = [median_ms(torch_forward), median_ms(torch_backward),
              np.median(run_torch(config, batch, args)[0]) * 1e3]
  print("| ms (median) | forward + loss | forward + backward | whole step |")
  print("|---|---|---|---|")
  for name, row in (("bert_jax", jax_ms), ("torch", torch_ms)):
    print(f"| {name} | " + " | ".join(f"{ms:,.0f}" for ms in row) + " |")
  print("(torch's forward runs under no_grad: it keeps no activations.)")


def profile(config, batch, args) -> None:
  """Time of bert_jax's step per compiled XLA op, summed over the runtime's worker threads."""
  step, state = bert_jax_step(config, batch)
  print("bert_jax " + xla_profile.report(
      step, (state, jax.device_put(batch), train_state.root_key(config)), args.steps,
      args.warmup))


def _measure_isolated(framework: str) -> dict:
  """Runs this script for one framework in a fresh process; its result as harness.measure."""
  argv = [a for a in sys.argv[1:] if not a.startswith(("--frameworks", "--isolate"))]
  command = [sys.executable, "-m", "bench.train_step", f"--frameworks={framework}",
             "--json_result", *argv]
  output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
  return json.loads(output.strip().splitlines()[-1])


RUNNERS = {"bert_jax": run_bert_jax, "torch": run_torch, "flax": run_flax}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  harness.add_flags(parser, preset="small", batch_size=8, steps=30, warmup=3)
  parser.add_argument("--predictions", type=int, default=20, help="max_predictions_per_seq")
  parser.add_argument("--isolate", action="store_true",
                      help="each framework in its own subprocess")
  parser.add_argument("--breakdown", action="store_true",
                      help="time forward, forward + backward and the whole step instead")
  parser.add_argument("--profile", action="store_true",
                      help="bert_jax's time per XLA op (jax.profiler trace) instead")
  parser.add_argument("--json_result", action="store_true", help=argparse.SUPPRESS)
  args, frameworks = harness.parse(parser)

  config = harness.config(args, args.predictions)
  batch = synthetic.random_batch(args.batch_size, args.seq_length, args.predictions,
                                 config.model.vocab_size, min_predictions=args.predictions // 2,
                                 first_id=1000, mask_id=MASK_ID)
  if args.breakdown:
    breakdown(config, batch, args)
    return
  if args.profile:
    profile(config, batch, args)
    return

  def measure(framework):
    return harness.measure(RUNNERS[framework], framework, config, batch, args)

  if args.json_result:  # A subprocess of --isolate: one framework, one JSON line.
    print(json.dumps(measure(frameworks[0])))
    return

  model_flops = flops.pretraining_flops_per_step(
      config.model, args.batch_size, args.seq_length, args.predictions)
  hf_flops = flops.pretraining_flops_per_step(
      config.model, args.batch_size, args.seq_length, args.seq_length)
  results = {framework: _measure_isolated(framework) if args.isolate else measure(framework)
             for framework in frameworks}
  model = config.model
  print(f"preset {args.preset}: L{model.num_hidden_layers}/H{model.hidden_size}/"
        f"A{model.num_attention_heads}/I{model.intermediate_size}, vocab {model.vocab_size}; "
        f"batch {args.batch_size} x seq {args.seq_length}, {args.predictions} predictions; "
        f"float32; {harness.device_line()}; median of {args.steps} steps after {args.warmup}"
        + (", each framework in its own process" if args.isolate else ", one process"))
  print(f"model FLOPs per step (bert_jax/model/flops.py, MLM head on the masked positions): "
        f"{model_flops / 1e9:.1f} G; HF's matmuls with its MLM head on all "
        f"{args.seq_length} tokens: {hf_flops / 1e9:.1f} G")
  harness.print_table(results, model_flops, args)
  if "seconds" in results.get("torch", {}):
    print(f"torch's own matmul work ({hf_flops / 1e9:.1f} G/step) runs at "
          f"{hf_flops / np.median(results['torch']['seconds']) / 1e9:.0f} GFLOP/s")


if __name__ == "__main__":
  main()
