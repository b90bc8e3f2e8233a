"""What the side-by-side benchmarks (train_step, finetune_step, encode) share.

One benchmark config per preset, the flags that choose it, one timing loop, the optimizers the
references train with (AdamW with BERT's weight-decay mask, as HF's Trainer builds it), XLA's
matmul rate as the CPU's yardstick, and the results table. Each script times its own step.
"""

import argparse
import functools
import os
import time
from typing import Callable

import jax
import ml_collections
import numpy as np

from bert_jax.config import validation
from bert_jax.model import flops
from bert_jax.runtime import optim
from configs import base

PRESETS = {
    # bench/device_check.py's --smoke size: every code path in seconds on a CPU.
    "tiny": dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=2,
                 intermediate_size=256),
    "small": dict(num_hidden_layers=4, hidden_size=256, num_attention_heads=4,
                  intermediate_size=1024),
    "base": dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12,
                 intermediate_size=3072),
    "large": dict(num_hidden_layers=24, hidden_size=1024, num_attention_heads=16,
                  intermediate_size=4096),
}
FRAMEWORKS = ("bert_jax", "torch", "flax")


def add_flags(parser: argparse.ArgumentParser, *, preset: str, batch_size: int, steps: int,
              warmup: int) -> None:
  """The flags every benchmark takes, with the script's defaults."""
  parser.add_argument("--preset", choices=sorted(PRESETS), default=preset)
  parser.add_argument("--batch_size", type=int, default=batch_size)
  parser.add_argument("--seq_length", type=int, default=128)
  parser.add_argument("--steps", type=int, default=steps, help="timed calls")
  parser.add_argument("--warmup", type=int, default=warmup, help="untimed calls first (compile)")
  parser.add_argument("--frameworks", default=",".join(FRAMEWORKS))
  parser.add_argument("--torch_threads", type=int, default=2)
  parser.add_argument("--scan_layers", choices=("true", "false"), default="true",
                      help="bert_jax's model.scan_layers (false: the layer loop unrolled)")
  parser.add_argument("--rng_impl", choices=validation.RNG_IMPLS,
                      default="threefry2x32", help="bert_jax's rng_impl (dropout's bits)")


def parse(parser: argparse.ArgumentParser) -> tuple[argparse.Namespace, list[str]]:
  """The parsed flags and the list of frameworks to run (an unknown one is a usage error)."""
  args = parser.parse_args()
  frameworks = args.frameworks.split(",")
  unknown = set(frameworks) - set(FRAMEWORKS)
  if unknown:
    parser.error(f"--frameworks: unknown {sorted(unknown)}; known: {', '.join(FRAMEWORKS)}")
  return args, frameworks


def config(args: argparse.Namespace, predictions: int = 0) -> ml_collections.ConfigDict:
  """configs/base.py at the preset's size, vocab 30522 (BERT's uncased WordPiece)."""
  result = base.get_config()
  result.model.update(vocab_size=30522, scan_layers=args.scan_layers == "true",
                      **PRESETS[args.preset])
  result.model.dtype = "float32"  # Each bench says its precision; never the machine's 'auto'.
  result.rng_impl = args.rng_impl
  result.data.update(max_seq_length=args.seq_length, max_predictions_per_seq=predictions)
  result.train.update(batch_size=args.batch_size, num_warmup_steps=10, num_train_steps=10_000)
  return result


def preset_config(preset: str, seq_length: int, batch_size: int) -> ml_collections.ConfigDict:
  """`config` for a script without these flags: the preset, scanned layers, threefry."""
  return config(argparse.Namespace(preset=preset, scan_layers="true", rng_impl="threefry2x32",
                                   batch_size=batch_size, seq_length=seq_length))


def hf_config_dict(config: ml_collections.ConfigDict) -> dict:
  """transformers.BertConfig's arguments for the same model."""
  model = config.model
  return dict(
      vocab_size=model.vocab_size, hidden_size=model.hidden_size,
      num_hidden_layers=model.num_hidden_layers, num_attention_heads=model.num_attention_heads,
      intermediate_size=model.intermediate_size, hidden_act=model.hidden_act,
      hidden_dropout_prob=model.hidden_dropout_prob,
      attention_probs_dropout_prob=model.attention_probs_dropout_prob,
      max_position_embeddings=model.max_position_embeddings,
      type_vocab_size=model.type_vocab_size, initializer_range=model.initializer_range,
      layer_norm_eps=1e-12)


def time_calls(call: Callable[[], None], warmup: int, steps: int) -> np.ndarray:
  """Seconds of each of `steps` calls of `call` (which returns once its result is on the host)."""
  for _ in range(warmup):
    call()
  seconds = []
  for _ in range(steps):
    start = time.perf_counter()
    call()
    seconds.append(time.perf_counter() - start)
  return np.array(seconds)


def torch_adamw(model, train_config: ml_collections.ConfigDict, fused: bool = False):
  """torch.optim.AdamW with BERT's decay mask (none on biases and LayerNorm), as HF's Trainer.

  `fused`: torch's one-kernel AdamW (CUDA only), its fastest on a GPU.
  """
  import torch  # pylint: disable=import-outside-toplevel
  named = list(model.named_parameters())
  no_decay = [p for n, p in named if n.endswith("bias") or "LayerNorm" in n]
  decay = [p for n, p in named if not (n.endswith("bias") or "LayerNorm" in n)]
  return torch.optim.AdamW(
      [{"params": decay, "weight_decay": train_config.weight_decay},
       {"params": no_decay, "weight_decay": 0.0}],
      lr=train_config.learning_rate, betas=(train_config.adam_b1, train_config.adam_b2),
      eps=train_config.adam_epsilon, fused=fused or None)


def optax_adamw(train_config: ml_collections.ConfigDict):
  """Clipping + AdamW with BERT's decay mask, as HF's Flax examples train (constant rate)."""
  import optax  # pylint: disable=import-outside-toplevel
  return optax.chain(
      optax.clip_by_global_norm(train_config.max_grad_norm),
      optax.adamw(train_config.learning_rate, b1=train_config.adam_b1, b2=train_config.adam_b2,
                  eps=train_config.adam_epsilon, weight_decay=train_config.weight_decay,
                  mask=optim.weight_decay_mask))


def measure(runner: Callable[..., tuple[np.ndarray, str]], framework: str, *args) -> dict:
  """{'seconds': [...], 'note': ...}, or for flax (HF's deprecated Flax models) {'skipped': why}."""
  try:
    seconds, note = runner(*args)
  except Exception as error:  # pylint: disable=broad-except
    if framework != "flax":
      raise
    return {"skipped": f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"}
  return {"seconds": np.asarray(seconds).tolist(), "note": note}


def device_line() -> str:
  device = jax.devices()[0]
  return f"jax device {device.device_kind} ({device.platform}), {os.cpu_count()} cores"


def print_table(results: dict[str, dict], model_flops: float, args: argparse.Namespace,
                unit: str = "step", rows: str = "sequences") -> None:
  """The results as a markdown table: time, throughput, ratio to torch, FLOP/s and efficiency.

  On an accelerator whose datasheet peak is known the last column is MFU; elsewhere (CPU) it
  is the achieved rate against XLA's own fp32 matmul rate here, measured now.
  """
  device = jax.devices()[0]
  peak = flops.datasheet_peak_tflops(device.device_kind, "float32")
  matmul_gflops = 1e3 * flops.measured_matmul_tflops("float32")
  print(f"XLA fp32 matmul 4096x512 @ 512x512 here: {matmul_gflops:.0f} GFLOP/s"
        + (f"; datasheet fp32 peak of {device.device_kind}: {peak:.0f} TFLOP/s" if peak else ""))
  print()
  reference = results.get("torch", {}).get("seconds")
  reference_median = np.median(reference) if reference else None
  efficiency = "MFU" if peak else "of XLA matmul"
  print(f"| framework | ms/{unit} median (p10-p90) | {rows}/s | tokens/s | vs torch | "
        f"model GFLOP/s | {efficiency} |")
  print("|---|---|---|---|---|---|---|")
  for framework, result in results.items():
    if "skipped" in result:
      print(f"| {framework} | skipped: {result['skipped']} | | | | | |")
      continue
    seconds = np.array(result["seconds"])
    median = np.median(seconds)
    p10, p90 = np.percentile(seconds, [10, 90])
    achieved = model_flops / median
    fraction = achieved / (peak * 1e12) if peak else achieved / (matmul_gflops * 1e9)
    ratio = f"{reference_median / median:.2f}x" if reference_median else "-"
    print(f"| {framework} | {median * 1e3:,.0f} ({p10 * 1e3:,.0f}-{p90 * 1e3:,.0f}) | "
          f"{args.batch_size / median:,.1f} | {args.batch_size * args.seq_length / median:,.0f} | "
          f"{ratio} | {achieved / 1e9:.0f} | {fraction:.0%} |")
  print()
  for framework, result in results.items():
    if "note" in result:
      print(f"{framework}: {result['note']}")


def torch_device(args: argparse.Namespace) -> str:
  """Sets torch's threads (--torch_threads) and seed; the device a reference runs on."""
  import torch  # pylint: disable=import-outside-toplevel
  torch.set_num_threads(args.torch_threads)
  torch.manual_seed(0)
  return "cuda" if torch.cuda.is_available() else "cpu"


def hf_mlm_labels(batch: dict[str, np.ndarray]) -> np.ndarray:
  """[batch, length] MLM labels in HF's form: the original id at a masked position, else -100."""
  labels = np.full(batch["input_ids"].shape, -100, np.int64)
  for row, (positions, ids, weights) in enumerate(zip(
      batch["masked_lm_positions"], batch["masked_lm_ids"], batch["masked_lm_weights"])):
    labels[row, positions[weights > 0]] = ids[weights > 0]
  return labels


def torch_inputs(batch: dict[str, np.ndarray], device: str) -> dict:
  """HF's names for our input features, as torch tensors on `device`."""
  import torch  # pylint: disable=import-outside-toplevel
  return {
      "input_ids": torch.tensor(batch["input_ids"], dtype=torch.long, device=device),
      "token_type_ids": torch.tensor(batch["segment_ids"], dtype=torch.long, device=device),
      "attention_mask": torch.tensor(batch["input_mask"], dtype=torch.long, device=device),
  }


def time_torch_training(model, inputs: dict, config: ml_collections.ConfigDict,
                        args: argparse.Namespace, autocast_dtype=None) -> tuple[np.ndarray, str]:
  """Seconds per step of an HF torch model trained on `inputs` (with labels) as users do:
  zero_grad, loss, backward, global-norm clipping, AdamW with BERT's decay mask.

  `autocast_dtype` (e.g. torch.bfloat16): the forward pass under torch.autocast, float32
  params and optimizer (mixed precision as HF's Trainer runs `bf16=True`); fused AdamW on CUDA.
  """
  import contextlib  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  device_type = next(model.parameters()).device.type
  optimizer = torch_adamw(model, config.train, fused=device_type == "cuda")

  def autocast():
    if autocast_dtype is None:
      return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=autocast_dtype)

  def one_step():
    optimizer.zero_grad(set_to_none=True)
    with autocast():
      loss = model(**inputs).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), config.train.max_grad_norm)
    optimizer.step()
    loss.item()  # The host sync (a no-op wait on CPU).

  return time_calls(one_step, args.warmup, args.steps), (
      f"torch {torch.__version__}, {torch.get_num_threads()} threads, {device_type}, "
      f"attention '{model.config._attn_implementation}'"  # pylint: disable=protected-access
      + (f", autocast {autocast_dtype}" if autocast_dtype is not None else ""))


def time_optax_training(loss_fn: Callable, params, config: ml_collections.ConfigDict,
                        inputs: dict, args: argparse.Namespace) -> np.ndarray:
  """Seconds per step of `loss_fn(params, inputs, dropout_rng)` trained with optax_adamw, jitted
  with params and optimizer state donated, as HF's Flax examples run it."""
  import optax  # pylint: disable=import-outside-toplevel
  tx = optax_adamw(config.train)

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def step(params, opt_state, inputs, rng):
    loss, grads = jax.value_and_grad(loss_fn)(params, inputs, rng)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  opt_state = tx.init(params)
  rng = jax.random.key(1)

  def one_step():
    nonlocal params, opt_state, rng
    rng, dropout_rng = jax.random.split(rng)
    params, opt_state, loss = step(params, opt_state, inputs, dropout_rng)
    loss.block_until_ready()

  return time_calls(one_step, args.warmup, args.steps)
