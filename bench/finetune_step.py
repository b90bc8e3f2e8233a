"""Steady-state fine-tuning step (sequence classification) of bert_jax vs transformers' BERT.

    python -m bench.finetune_step                          # BERT-Base (L12/H768/A12/I3072)
    python -m bench.finetune_step --preset=small           # L4/H256/A4/I1024, vocab 30522
    [--batch_size=32 --seq_length=128 --num_labels=3 --steps=10 --warmup=2
     --frameworks=bert_jax,torch,flax --torch_threads=2 --profile]

A GLUE-style step (MNLI's 3 labels by default): every framework trains the same model config
(post-LN BERT, erf GELU, dropout 0.1, float32) with a classifier on the pooled [CLS] output,
on the same host batch (bench/train_step.py's random token ids, padding and segments, random
labels), with mean cross-entropy and AdamW (weight decay 0.01, none on biases and LayerNorm)
after clipping the global gradient norm to 1.0:

  bert_jax  `finetune_program.finetune_step` on `finetune_program.create_model(
            'classification', ...)`, jitted with the state donated, as `finetune.finetune`
            runs it (its warmup/decay schedule).
  torch     `transformers.BertForSequenceClassification` with `labels`, `torch.optim.AdamW`,
            torch.set_num_threads(--torch_threads, 2 by default = the cores here).
  flax      transformers' `FlaxBertForSequenceClassification` (`train=True`, a dropout rng),
            optax clip + adamw, jitted with params and optimizer state donated. Skipped with the
            reason if it does not import or run.

A step is timed from the call until its loss is on the host (jax: block_until_ready; torch:
.item()), `--warmup` steps first (they include jax's compile), then the median and p10/p90 of
`--steps` steps, the frameworks one after another in this process.

Model FLOPs per step are 3x the forward matmuls (encoder + pooler + classifier; the backward
pass is twice the forward), the same numerator for every framework; the achieved GFLOP/s is
compared with XLA's own fp32 matmul rate on this device (4096x512 @ 512x512, measured here).
"""

import argparse
import functools

import jax
import jax.numpy as jnp
import numpy as np

from bench import harness
from bench import xla_profile
from bert_jax.finetuning import finetune_program
from bert_jax.model import flops
from bert_jax.model import families
from bert_jax.model import modeling
from bert_jax.pretraining.data import synthetic
from bert_jax.runtime import optim
from bert_jax.runtime import train_state

FAMILY = "classification"



def _batch(args, vocab_size: int) -> dict[str, np.ndarray]:
  """Random tokens and padding (no masked positions), with a random label per sequence."""
  batch = synthetic.random_batch(args.batch_size, args.seq_length, 1, vocab_size, first_id=1000)
  batch = {k: batch[k] for k in ("input_ids", "segment_ids", "input_mask")}
  rng = np.random.default_rng(1)
  batch["label_ids"] = rng.integers(0, args.num_labels, args.batch_size).astype(np.int32)
  return batch


def bert_jax_step(config, batch, args):
  """(the jitted step, its initial state): what the timing and the profile both run."""
  model = finetune_program.create_model(
      FAMILY, modeling.BertConfig.from_config(config.model), args.num_labels)
  tx = optim.create_optimizer(config.train)
  state = jax.jit(functools.partial(train_state.create_train_state, model=model, tx=tx,
                                    batch=batch))(jax.random.key(0))
  step = jax.jit(functools.partial(finetune_program.finetune_step, model=model, tx=tx,
                                   loss=families.get(FAMILY).loss), donate_argnums=(0,))
  return step, state


def run_bert_jax(config, batch, args) -> tuple[np.ndarray, str]:
  step, state = bert_jax_step(config, batch, args)
  device_batch = jax.device_put(batch)
  rng = train_state.root_key(config)

  def one_step():
    nonlocal state
    state, metrics = step(state, device_batch, rng)
    metrics["loss"].block_until_ready()

  return harness.time_calls(one_step, args.warmup, args.steps), (
      f"jax {jax.__version__}, scan_layers={config.model.scan_layers}, rng_impl={config.rng_impl}")


def run_torch(config, batch, args) -> tuple[np.ndarray, str]:
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel

  device = harness.torch_device(args)
  hf_config = transformers.BertConfig(
      **harness.hf_config_dict(config), num_labels=args.num_labels)
  model = transformers.BertForSequenceClassification(hf_config).to(device).train()
  inputs = {
      **harness.torch_inputs(batch, device),
      "labels": torch.tensor(batch["label_ids"], dtype=torch.long, device=device),
  }
  return harness.time_torch_training(model, inputs, config, args)


def run_flax(config, batch, args) -> tuple[np.ndarray, str]:
  import optax  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel

  hf_config = transformers.BertConfig(
      **harness.hf_config_dict(config), num_labels=args.num_labels)
  model = transformers.FlaxBertForSequenceClassification(hf_config, seed=0, dtype=jnp.float32)
  inputs = jax.device_put({
      "input_ids": batch["input_ids"], "attention_mask": batch["input_mask"],
      "token_type_ids": batch["segment_ids"], "labels": batch["label_ids"]})

  def loss_fn(params, inputs, dropout_rng):
    logits = model(inputs["input_ids"], inputs["attention_mask"], inputs["token_type_ids"],
                   params=params, dropout_rng=dropout_rng, train=True).logits  # [batch, labels]
    return optax.softmax_cross_entropy_with_integer_labels(logits, inputs["labels"]).mean()

  seconds = harness.time_optax_training(loss_fn, model.params, config, inputs, args)
  return seconds, f"transformers {transformers.__version__}"


RUNNERS = {"bert_jax": run_bert_jax, "torch": run_torch, "flax": run_flax}


def profile(config, batch, args) -> None:
  """Time of bert_jax's step per compiled XLA op, summed over the runtime's worker threads."""
  step, state = bert_jax_step(config, batch, args)
  print("bert_jax " + xla_profile.report(
      step, (state, jax.device_put(batch), train_state.root_key(config)), args.steps,
      args.warmup))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  harness.add_flags(parser, preset="base", batch_size=32, steps=10, warmup=2)
  parser.add_argument("--num_labels", type=int, default=3, help="classes (2 or more)")
  parser.add_argument("--profile", action="store_true",
                      help="bert_jax's time per XLA op (jax.profiler trace) instead")
  args, frameworks = harness.parse(parser)
  if args.num_labels < 2:
    # One label is regression in both bert_jax and HF: a different loss, not this benchmark.
    parser.error("--num_labels must be at least 2 (classification)")

  config = harness.config(args)
  model = config.model
  batch = _batch(args, model.vocab_size)
  if args.profile:
    profile(config, batch, args)
    return
  results = {framework: harness.measure(RUNNERS[framework], framework, config, batch, args)
             for framework in frameworks}
  model_flops = flops.classification_flops_per_step(
      model, args.batch_size, args.seq_length, args.num_labels)

  print(f"preset {args.preset}: L{model.num_hidden_layers}/H{model.hidden_size}/"
        f"A{model.num_attention_heads}/I{model.intermediate_size}, vocab {model.vocab_size}; "
        f"sequence classification, {args.num_labels} labels; batch {args.batch_size} x seq "
        f"{args.seq_length}; float32; {harness.device_line()}; median of {args.steps} steps "
        f"after {args.warmup}, one process")
  print(f"model FLOPs per step (3x forward: encoder + pooler + classifier): "
        f"{model_flops / 1e9:.1f} G")
  harness.print_table(results, model_flops, args)


if __name__ == "__main__":
  main()
