"""bfloat16 against float32 in every mode and size: bert_jax and transformers, alternating rounds.

    python -m bench.precision                       # tiny, small, base; every mode; 3 rounds
    python -m bench.precision --sizes=small --modes=encode,finetune --rounds=4 --steps=3
    python -m bench.precision --sizes=small --modes=pretrain --profile   # where bf16 goes
    [--frameworks=bert_jax,torch --torch_threads=2]

The modes are what a run compiles: `pretrain` (train_program.train_step, as bench/train_step.py
runs it), `finetune` (finetune_program.finetune_step, a 3-label classifier), `encode`
(encode.embed), `predict` (the classifier's forward, finetune_program.predict_step) and `eval`
(train_program.eval_step). Every mode runs in float32 and in bfloat16 compute (float32 params,
float32 softmax, LayerNorm statistics and losses; BertConfig.dtype). transformers runs the same
model config at the same precision: float32, or `torch.autocast(bfloat16)`.

The sizes: `tiny` is configs/tiny.py's model (L2/H128, vocab 4,000) at its length 64; `small`
(L4/H256) and `base` (BERT-Base) are bench/harness.py's presets at length 128 with BERT's
vocabulary. Batches: pre-training 64 (tiny) or 8 rows, fine-tuning 32 (tiny, small) or 8 (base),
inference 64 (tiny) or 32.

Every callable of a cell (mode x size) is compiled and called once first; then `--rounds`
rounds call each in turn `--steps` times, so that a noisy machine (this one's matmul rate moves
by 2x within minutes) slows every column alike. The table gives medians over all rounds and the
bf16/fp32 speed-up of each framework in the same rounds. Never asserted in tests.
"""

import argparse
import contextlib
import functools
import time

import jax
import ml_collections
import numpy as np

from bench import encode as encode_bench
from bench import finetune_step
from bench import harness
from bench import train_step
from bench import xla_profile
from bert_jax.finetuning import encode
from bert_jax.finetuning import finetune_program
from bert_jax.model import flops
from bert_jax.model import modeling
from bert_jax.pretraining import train_program
from bert_jax.pretraining.data import synthetic
from bert_jax.runtime import train_state
from configs import tiny

MODES = ("pretrain", "finetune", "encode", "predict", "eval")
DTYPES = ("float32", "bfloat16")
# size: (seq length, pre-training batch, fine-tuning batch, inference batch)
SIZES = {"tiny": (64, 64, 32, 64), "small": (128, 8, 32, 32), "base": (128, 8, 8, 32)}
NUM_LABELS = 3


def size_config(size: str, mode: str, dtype: str) -> ml_collections.ConfigDict:
  seq, pretrain_batch, finetune_batch, inference_batch = SIZES[size]
  batch_size = {"pretrain": pretrain_batch, "eval": inference_batch,
                "finetune": finetune_batch}.get(mode, inference_batch)
  if size == "tiny":
    config = tiny.get_config()
    config.train.batch_size = batch_size
  else:
    config = harness.preset_config(size, seq, batch_size)
    config.data.max_predictions_per_seq = 20
  config.model.dtype = dtype
  return config


def host_batch(config: ml_collections.ConfigDict, mode: str) -> dict[str, np.ndarray]:
  """Random tokens and padding; MLM predictions for pre-training's modes, labels for the rest."""
  predictions = config.data.max_predictions_per_seq
  batch = synthetic.random_batch(config.train.batch_size, config.data.max_seq_length,
                                 predictions, config.model.vocab_size,
                                 min_predictions=predictions // 2, first_id=10, mask_id=4)
  if mode in ("pretrain", "eval"):
    return batch
  batch = {k: batch[k] for k in ("input_ids", "segment_ids", "input_mask")}
  batch["label_ids"] = np.random.default_rng(1).integers(
      0, NUM_LABELS, config.train.batch_size).astype(np.int32)
  return batch


def bert_jax_call(mode: str, config: ml_collections.ConfigDict, batch: dict):
  """(a call that runs one step of `mode` and waits for it, (jitted fn, args) for --profile)."""
  device_batch = jax.device_put(batch)
  rng = train_state.root_key(config)
  model_config = modeling.BertConfig.from_config(config.model)
  if mode in ("pretrain", "finetune"):
    if mode == "pretrain":
      step, state = train_step.bert_jax_step(config, batch)
    else:
      step, state = finetune_step.bert_jax_step(
          config, batch, argparse.Namespace(num_labels=NUM_LABELS))
    holder = [state]

    def call():
      holder[0], metrics = step(holder[0], device_batch, rng)
      metrics["loss"].block_until_ready()
    return call, (step, (holder, device_batch, rng))
  if mode == "encode":
    model = modeling.BertModel(model_config)
    params = encode_bench.pretraining_params(model_config)["bert"]
    fn = jax.jit(functools.partial(encode.embed, model=model))
  elif mode == "predict":
    model = finetune_program.create_model("classification", model_config, NUM_LABELS)
    params = jax.jit(functools.partial(train_state.init_params, model=model, batch=batch))(
        jax.random.key(0))
    fn = jax.jit(functools.partial(finetune_program.predict_step, model=model))
  else:
    model = modeling.BertForPreTraining(model_config)
    params = jax.jit(functools.partial(train_state.init_params, model=model, batch=batch))(
        jax.random.key(0))
    fn = jax.jit(functools.partial(train_program.eval_step, model=model,
                                   next_sentence_prediction=config.data.next_sentence_prediction))
  params = jax.device_put(params)

  def call():
    jax.block_until_ready(fn(params, device_batch))
  return call, None


def torch_call(mode: str, config: ml_collections.ConfigDict, batch: dict, args):
  """One step of transformers' model for `mode` at config.model.dtype (autocast for bf16)."""
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel

  device = harness.torch_device(args)
  hf_config = transformers.BertConfig(**harness.hf_config_dict(config), num_labels=NUM_LABELS)
  inputs = harness.torch_inputs(batch, device)
  bf16 = config.model.dtype == "bfloat16"

  def precision():
    return torch.autocast(device, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

  if mode in ("pretrain", "eval"):
    labels = {"labels": torch.tensor(harness.hf_mlm_labels(batch), device=device)}
    if config.data.next_sentence_prediction:
      model = transformers.BertForPreTraining(hf_config).to(device)
      labels["next_sentence_label"] = torch.tensor(batch["next_sentence_labels"],
                                                   dtype=torch.long, device=device)
    else:  # configs/tiny.py: MLM alone.
      model = transformers.BertForMaskedLM(hf_config).to(device)
  else:
    model = transformers.BertForSequenceClassification(hf_config).to(device)
    labels = {"labels": torch.tensor(batch["label_ids"], dtype=torch.long, device=device)}
  if mode == "encode":
    model = model.bert
  if mode in ("pretrain", "finetune"):
    model.train()
    optimizer = harness.torch_adamw(model, config.train)

    def call():
      optimizer.zero_grad(set_to_none=True)
      with precision():
        loss = model(**inputs, **labels).loss
      loss.backward()
      torch.nn.utils.clip_grad_norm_(model.parameters(), config.train.max_grad_norm)
      optimizer.step()
      loss.item()
    return call
  model.eval()

  def call():
    with precision(), torch.inference_mode():
      if mode == "encode":
        encode_bench.torch_embed(model, inputs)
      elif mode == "predict":
        model(**inputs).logits.float().cpu().numpy()
      else:
        model(**inputs, **labels).loss.item()
  return call


def _row_flops(mode: str, config: ml_collections.ConfigDict) -> float:
  model, batch, seq = config.model, config.train.batch_size, config.data.max_seq_length
  if mode == "pretrain":
    return flops.pretraining_flops_per_step(model, batch, seq,
                                            config.data.max_predictions_per_seq)
  if mode == "finetune":
    return flops.classification_flops_per_step(model, batch, seq, NUM_LABELS)
  if mode == "eval":
    return flops.pretraining_flops_per_step(model, batch, seq,
                                            config.data.max_predictions_per_seq) / 3
  return flops.encoder_forward_flops(model, batch, seq)


def run_cell(size: str, mode: str, frameworks: list[str], args) -> dict[str, list[float]]:
  """{'bert_jax float32': [seconds, ...], ...} over every round."""
  calls = {}
  for framework in frameworks:
    for dtype in DTYPES:
      config = size_config(size, mode, dtype)
      batch = host_batch(config, mode)
      call = (bert_jax_call(mode, config, batch)[0] if framework == "bert_jax"
              else torch_call(mode, config, batch, args))
      call()  # Compile (jax) or warm the kernels (torch).
      calls[f"{framework} {dtype}"] = call
  seconds = {name: [] for name in calls}
  for _ in range(args.rounds):
    for name, call in calls.items():
      seconds[name].extend(harness.time_calls(call, 0, args.steps))
  return seconds


def print_row(size: str, mode: str, seconds: dict[str, list[float]]) -> None:
  config = size_config(size, mode, "float32")
  median = {name: 1e3 * float(np.median(values)) for name, values in seconds.items()}
  row_flops = _row_flops(mode, config)

  def cell(name):
    if name not in median:
      return "-"
    p10, p90 = np.percentile(seconds[name], [10, 90]) * 1e3
    return f"{median[name]:,.0f} ({p10:,.0f}-{p90:,.0f}); {row_flops / median[name] / 1e6:,.0f}"

  def ratio(a, b):
    return f"{median[b] / median[a]:.2f}x" if a in median and b in median else "-"

  batch = f"{config.train.batch_size} x {config.data.max_seq_length}"
  print(f"| {mode} | {size} | {batch} | {cell('bert_jax float32')} | {cell('bert_jax bfloat16')} "
        f"| {ratio('bert_jax bfloat16', 'bert_jax float32')} | {cell('torch float32')} | "
        f"{cell('torch bfloat16')} | {ratio('torch bfloat16', 'torch float32')} | "
        f"{ratio('bert_jax float32', 'torch float32')} | "
        f"{ratio('bert_jax bfloat16', 'torch bfloat16')} |", flush=True)


def profile(size: str, mode: str, args) -> None:
  """bert_jax's time per XLA op in both dtypes, for a training mode."""
  for dtype in DTYPES:
    config = size_config(size, mode, dtype)
    _, (step, (holder, device_batch, rng)) = bert_jax_call(mode, config, host_batch(config, mode))
    print(f"## {mode} {size} {dtype}\n")
    print(xla_profile.report(step, (holder[0], device_batch, rng), args.steps, 2))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--sizes", default="tiny,small,base")
  parser.add_argument("--modes", default=",".join(MODES))
  parser.add_argument("--frameworks", default="bert_jax,torch")
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--steps", type=int, default=2, help="timed calls per round")
  parser.add_argument("--torch_threads", type=int, default=2)
  parser.add_argument("--profile", action="store_true",
                      help="bert_jax's time per XLA op in both dtypes (training modes)")
  args = parser.parse_args()
  sizes, modes = args.sizes.split(","), args.modes.split(",")
  for name, values, known in (("sizes", sizes, SIZES), ("modes", modes, MODES)):
    if set(values) - set(known):
      parser.error(f"--{name}: unknown {sorted(set(values) - set(known))}; known: "
                   f"{', '.join(known)}")
  if args.profile:
    for size in sizes:
      for mode in modes:
        profile(size, mode, args)
    return
  frameworks = args.frameworks.split(",")
  import torch  # pylint: disable=import-outside-toplevel
  print(f"{harness.device_line()}; jax {jax.__version__}, torch {torch.__version__} "
        f"({args.torch_threads} threads); {args.rounds} rounds of {args.steps} calls; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
  print(f"XLA matmul 4096x512 @ 512x512 here: "
        f"fp32 {1e3 * flops.measured_matmul_tflops('float32'):.0f} GFLOP/s, "
        f"bf16 {1e3 * flops.measured_matmul_tflops('bfloat16'):.0f} GFLOP/s\n")
  print("ms per call, median (p10-p90); model GFLOP/s after the semicolon\n")
  print("| mode | size | batch | bert_jax fp32 | bert_jax bf16 | bert_jax bf16 speed-up | "
        "torch fp32 | torch autocast bf16 | torch bf16 speed-up | bert_jax/torch fp32 | "
        "bert_jax/torch bf16 |")
  print("|---|---|---|---|---|---|---|---|---|---|---|")
  for size in sizes:
    for mode in modes:
      print_row(size, mode, run_cell(size, mode, frameworks, args))


if __name__ == "__main__":
  main()
