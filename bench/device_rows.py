"""The measurements of bench/device_check.py: matmul peak, attention numerics, one train-step row.

Each function measures one thing and returns a plain dict (JSON-ready); device_check.py decides
what runs, in which order, within its time budget, and reports. None of this imports TensorFlow:
it runs where only JAX (and, for the reference rows, PyTorch) is installed.
"""

import argparse
import dataclasses
import functools
import importlib.metadata
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bench import harness
from bert_jax.config import validation
from bert_jax.model import flops
from bert_jax.model import losses
from bert_jax.model import modeling
from bert_jax.pretraining import train_program
from bert_jax.pretraining.data import synthetic
from bert_jax.runtime import sharding
from bert_jax.runtime import train_state
from configs import base

NEEDS_GPU = "skipped: needs a GPU"
MASK_ID = 103  # [MASK] in Google's uncased vocabulary; any id works for timing.
_PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "torch", "transformers")


@dataclasses.dataclass(frozen=True)
class Shape:
  """One throughput shape: `preset:seq:batch` on the command line, e.g. `large:512:32`."""
  preset: str
  seq_length: int
  batch_size: int

  @classmethod
  def parse(cls, text: str) -> "Shape":
    preset, seq_length, batch_size = text.split(":")
    if preset not in harness.PRESETS:
      raise ValueError(f"{text}: preset {preset!r} is not one of {', '.join(harness.PRESETS)}")
    return cls(preset, int(seq_length), int(batch_size))

  @property
  def predictions(self) -> int:
    """max_predictions_per_seq: the original's 20 at 128 and 80 at 512, else 15% of the length."""
    return {128: 20, 512: 80}.get(self.seq_length, max(1, int(0.15 * self.seq_length)))

  def __str__(self) -> str:
    return f"{self.preset}:{self.seq_length}:{self.batch_size}"


def on_gpu() -> bool:
  return jax.default_backend() == "gpu"


def environment() -> dict:
  """Device, host and package versions."""
  device = jax.devices()[0]
  versions = {}
  for name in _PACKAGES:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = "not installed"
  result = {"device": device.device_kind, "platform": device.platform,
            "device_count": jax.device_count(), "versions": versions}
  try:
    import torch  # pylint: disable=import-outside-toplevel
    if torch.cuda.is_available():
      result["torch_cudnn"] = torch.backends.cudnn.version()
  except ImportError:
    pass
  return result


def matmul_tflops(dtype: str, size: int, repeats: int = 10, trials: int = 3) -> float:
  """XLA's rate for a [size, size] x [size, size] matmul: the MFU denominator, measured.

  `repeats` products are dispatched back to back before one wait, so the device's queue stays
  full and the host's dispatch time hides; the best of `trials` such runs.
  """
  keys = jax.random.split(jax.random.key(0))
  a, b = (jax.random.normal(key, (size, size), dtype) for key in keys)
  matmul = jax.jit(jnp.matmul)
  jax.block_until_ready(matmul(a, b))
  best = float("inf")
  for _ in range(trials):
    start = time.perf_counter()
    jax.block_until_ready([matmul(a, b) for _ in range(repeats)])
    best = min(best, (time.perf_counter() - start) / repeats)
  return 2 * size**3 / best / 1e12


def run_config(shape: Shape, attention: str, remat: str, dtype: str = "bfloat16"
               ) -> ml_collections.ConfigDict:
  """configs/base.py at the shape's model size, as a pre-training run would be configured.

  Attention-probability dropout is 0 in every row (the fused kernels have none; MosaicBERT
  trains so); hidden dropout stays at the original's 0.1.
  """
  config = base.get_config()
  config.model.update(vocab_size=30522, dtype=dtype, attention=attention, remat_policy=remat,
                      attention_probs_dropout_prob=0.0, **harness.PRESETS[shape.preset])
  config.data.update(max_seq_length=shape.seq_length,
                     max_predictions_per_seq=shape.predictions)
  config.train.update(batch_size=shape.batch_size, eval_batch_size=shape.batch_size,
                      num_warmup_steps=10, num_train_steps=10_000)
  return config


def random_batch(shape: Shape) -> dict[str, np.ndarray]:
  """Real padding (lengths from half to full), masked positions replaced by [MASK]."""
  return synthetic.random_batch(shape.batch_size, shape.seq_length, shape.predictions, 30522,
                                min_predictions=shape.predictions // 2, first_id=1000,
                                mask_id=MASK_ID)


def _relative_error(value, reference) -> dict:
  """max |value - reference| and ||value - reference|| / ||reference|| over a whole tree."""
  value = np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(value)])
  reference = np.concatenate([np.ravel(np.asarray(x, np.float64))
                              for x in jax.tree.leaves(reference)])
  difference = value - reference
  return {"max_abs": float(np.max(np.abs(difference))),
          "relative": float(np.linalg.norm(difference) / np.linalg.norm(reference))}


def numerics(shape: Shape) -> dict:
  """'cudnn' (bf16) and 'xla' (bf16) against 'xla' in float32, on the same params and batch.

  Dropout 0 everywhere, padding in every row. Compared: the encoder's output at real tokens,
  MLM and NSP logits, the loss, and the gradients of every param (bf16 compute, float32
  params). cuDNN is within bf16 tolerance when its relative error against float32 is at most
  twice XLA bf16's plus 1e-3.
  """
  config = run_config(shape, "xla", "none", "float32")
  config.model.hidden_dropout_prob = 0.0
  batch = random_batch(shape)
  model_inputs = (batch["input_ids"], batch["segment_ids"], batch["input_mask"])
  real_tokens = batch["input_mask"].astype(bool)
  params = None

  def outputs_and_grads(dtype: str, attention: str):
    nonlocal params
    model_config = modeling.BertConfig.from_dict(
        {**config.model.to_dict(), "dtype": dtype, "attention": attention})
    model = modeling.BertForPreTraining(model_config)
    if params is None:  # The float32 reference's init: every variant runs these params.
      params = nn.meta.unbox(jax.jit(functools.partial(
          train_state.init_params, model=model, batch=batch))(jax.random.key(0)))

    def loss_fn(params):
      mlm_logits, nsp_logits = model.apply({"params": params}, *model_inputs,
                                           batch["masked_lm_positions"], deterministic=False)
      loss, _ = losses.pretraining_loss(mlm_logits, nsp_logits, batch)
      return loss, (mlm_logits, nsp_logits)

    @jax.jit
    def run(params):
      (loss, (mlm_logits, nsp_logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
      sequence_output, _ = modeling.BertModel(model_config).apply(
          {"params": params["bert"]}, *model_inputs)
      return {"sequence_output": sequence_output.astype(jnp.float32), "mlm_logits": mlm_logits,
              "nsp_logits": nsp_logits, "loss": loss, "gradients": grads}

    out = jax.device_get(run(params))
    out["sequence_output"] = out["sequence_output"][real_tokens]  # [real tokens, hidden]
    return out

  reference = outputs_and_grads("float32", "xla")
  variants = {"xla_bfloat16": ("bfloat16", "xla"), "cudnn_bfloat16": ("bfloat16", "cudnn")}
  result = {"shape": str(shape), "compared": list(reference)}
  for name, (dtype, attention) in variants.items():
    if attention == "cudnn" and not on_gpu():
      result[name] = NEEDS_GPU
      continue
    out = outputs_and_grads(dtype, attention)
    result[name] = {key: _relative_error(out[key], reference[key]) for key in reference}
  if isinstance(result["cudnn_bfloat16"], dict):
    result["cudnn_within_bf16_tolerance"] = all(
        result["cudnn_bfloat16"][key]["relative"]
        <= 2 * result["xla_bfloat16"][key]["relative"] + 1e-3 for key in reference)
  return result


def _timing(seconds: np.ndarray, shape: Shape, step_flops: float, peaks: dict) -> dict:
  median = float(np.median(seconds))
  p10, p90 = np.percentile(seconds, [10, 90])
  return {
      "ms_per_step": 1e3 * median, "ms_p10": 1e3 * float(p10), "ms_p90": 1e3 * float(p90),
      "sequences_per_second": shape.batch_size / median,
      "tokens_per_second": shape.batch_size * shape.seq_length / median,
      "model_tflops_per_second": step_flops / median / 1e12,
      **{f"mfu_{name}": step_flops / median / (peak * 1e12) / jax.device_count()
         for name, peak in peaks.items() if peak}}


def bert_jax_row(shape: Shape, attention: str, remat: str, args: argparse.Namespace,
                 peaks: dict) -> dict:
  """The project's own train step (build_program: AdamW, NaN guard, donated state), bf16."""
  config = run_config(shape, attention, remat)
  validation.validate(config)
  mesh = sharding.create_mesh(config.mesh)
  rules = sharding.logical_axis_rules(config)
  validation.validate_batch_sizes(config, mesh)
  step_flops = flops.pretraining_flops_per_step(config.model, shape.batch_size,
                                                shape.seq_length, shape.predictions)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    program = train_program.build_program(config, mesh, rules, next_sentence_prediction=True)
    init_rng, dropout_rng = jax.random.split(train_state.root_key(config))
    shapes = train_program.dummy_batch(1, shape.seq_length, shape.predictions)
    state = jax.jit(functools.partial(train_state.create_train_state, model=program.model,
                                      tx=program.tx, batch=shapes),
                    out_shardings=program.state_shardings)(init_rng)
    start = time.perf_counter()
    compiled = program.train_step.lower(
        state, train_program.abstract_batch(config, shape.batch_size, program.batch_sharding),
        dropout_rng).compile()
    compile_seconds = time.perf_counter() - start
    memory = compiled.memory_analysis()
    batch = jax.device_put(random_batch(shape), program.batch_sharding)
    losses_seen = []

    def one_step():
      nonlocal state
      state, metrics = compiled(state, batch, dropout_rng)
      losses_seen.append(float(metrics["loss"]))  # The host sync, as a run's log line.

    seconds = harness.time_calls(one_step, args.warmup, args.steps)
  if not np.all(np.isfinite(losses_seen)):
    raise FloatingPointError(f"non-finite loss in the timed steps: {losses_seen}")
  result = {"compile_seconds": compile_seconds, "loss_first_last": [losses_seen[0],
                                                                     losses_seen[-1]]}
  if memory is not None:
    result["memory_gib"] = (memory.argument_size_in_bytes + memory.output_size_in_bytes
                            - memory.alias_size_in_bytes + memory.temp_size_in_bytes) / 2**30
  return {**result, **_timing(seconds, shape, step_flops, peaks)}


def torch_row(shape: Shape, args: argparse.Namespace, peaks: dict,
              compile_backend: str | None = None) -> dict:
  """transformers' BertForPreTraining, bf16 autocast, SDPA attention, same batch and sizes.

  Its MLM head runs on every token as users run it; the FLOPs credited are still the model
  FLOPs of bert_jax/model/flops.py, the same numerator for both. `compile_backend`: torch.compile it.
  """
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel

  config = run_config(shape, "xla", "none")
  device = harness.torch_device(args)
  hf_config = transformers.BertConfig(**harness.hf_config_dict(config),
                                      attn_implementation="sdpa")
  model = transformers.BertForPreTraining(hf_config).to(device).train()
  if compile_backend:
    model = torch.compile(model, backend=compile_backend)
  batch = random_batch(shape)
  inputs = {**harness.torch_inputs(batch, device),
            "labels": torch.tensor(harness.hf_mlm_labels(batch), device=device),
            "next_sentence_label": torch.tensor(batch["next_sentence_labels"], dtype=torch.long,
                                                device=device)}
  if device == "cuda":
    torch.cuda.reset_peak_memory_stats()
  start = time.perf_counter()
  seconds, note = harness.time_torch_training(model, inputs, config, args,
                                              autocast_dtype=torch.bfloat16)
  # The warmup steps: what is left of the wall time once the timed steps are taken out.
  result = {"compile_seconds": time.perf_counter() - start - float(np.sum(seconds)),
            "note": note + (f", torch.compile backend {compile_backend}" if compile_backend
                            else "")}
  if device == "cuda":
    result["memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    del model, inputs
    torch.cuda.empty_cache()
  step_flops = flops.pretraining_flops_per_step(config.model, shape.batch_size,
                                                shape.seq_length, shape.predictions)
  return {**result, **_timing(seconds, shape, step_flops, peaks)}
