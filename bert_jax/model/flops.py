"""Model FLOPs of BERT's steps, from the architecture (for MFU, AOT and benchmark reports).

Counted from the shapes, not from XLA's cost_analysis, which counts a scanned layer once instead
of num_hidden_layers times and reports per-device figures of sharded programs.
"""

import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np


def pretraining_flops_per_step(model_config: ml_collections.ConfigDict, batch_size: int,
                               seq_len: int, max_predictions_per_seq: int) -> int:
  """Matmul FLOPs of one optimizer step of BertForPreTraining on a global batch.

  A matmul of [m, k] x [k, n] is 2*m*k*n FLOPs (a multiply and an add). With B = batch_size,
  L = seq_len, P = max_predictions_per_seq, H = hidden_size, I = intermediate_size,
  V = vocab_size and N = num_hidden_layers, the forward pass is:

    encoder, per layer:  query/key/value  3 * 2*B*L*H*H
                         scores Q K^T         2*B*L*L*H   (all heads: heads * head_dim = H)
                         context P V          2*B*L*L*H
                         attention output     2*B*L*H*H
                         feed-forward     2 * 2*B*L*H*I
    MLM head (on the P gathered masked positions only, as the model runs it):
                         transform            2*B*P*H*H
                         tied decoder         2*B*P*H*V
    pooler on [CLS]:                          2*B*H*H
    NSP classifier:                           2*B*H*2

  Padding positions count (the step computes them). Embedding gathers, LayerNorm, softmax,
  GELU, dropout and the optimizer update are left out: they are O(B*L*H) or O(params), well
  under 1% at BERT sizes. The backward pass is twice the forward (gradients with respect to
  both activations and weights), so a step is 3x the forward. Remat recomputation is not
  counted: these are model FLOPs, the numerator of MFU, not hardware FLOPs.

  Args:
    model_config: config.model (hidden_size, intermediate_size, num_hidden_layers, vocab_size).
    batch_size: Global batch, in sequences.
    seq_len: Tokens per sequence (data.max_seq_length).
    max_predictions_per_seq: Masked positions per sequence the MLM head runs on.

  Returns:
    FLOPs of one training step, summed over all devices.
  """
  b, p, h = batch_size, max_predictions_per_seq, model_config.hidden_size
  mlm_head = 2 * b * p * h * (h + model_config.vocab_size)
  nsp = 2 * b * h * 2
  return 3 * (encoder_forward_flops(model_config, batch_size, seq_len) + mlm_head + nsp)


def encoder_forward_flops(model_config: ml_collections.ConfigDict, batch_size: int,
                          seq_len: int) -> int:
  """Matmul FLOPs of the encoder's forward pass with the pooler (the terms above without the
  heads): what computing embeddings costs."""
  b, l = batch_size, seq_len
  h, i = model_config.hidden_size, model_config.intermediate_size
  per_layer = 2 * b * l * (4 * h * h + 2 * h * i) + 2 * 2 * b * l * l * h
  return model_config.num_hidden_layers * per_layer + 2 * b * h * h


def classification_flops_per_step(model_config: ml_collections.ConfigDict, batch_size: int,
                                  seq_len: int, num_labels: int) -> int:
  """A fine-tuning step of a [CLS] classifier: 3x (encoder + pooler + [H, num_labels])."""
  classifier = 2 * batch_size * model_config.hidden_size * num_labels
  return 3 * (encoder_forward_flops(model_config, batch_size, seq_len) + classifier)


def finetuning_flops_per_step(model_config: Any, sequences: int, seq_len: int,
                              head_flops: int) -> int:
  """A fine-tuning step of any task family: 3x (encoder + pooler + its head's forward FLOPs,
  model/families.py's `head_flops`: one vector per example for the [CLS] families, every token
  for the token and span ones)."""
  return 3 * (encoder_forward_flops(model_config, sequences, seq_len) + head_flops)


# Datasheet dense peaks, TFLOP/s per device, by jax device_kind prefix (longest first) and
# compute dtype. TPUs quote bfloat16 only (their float32 matmuls are multi-pass bfloat16); a
# missing entry falls back to a measured matmul rate (measured_matmul_tflops).
PEAK_TFLOPS = {
    "TPU v6 lite": {"bfloat16": 918.0}, "TPU v6e": {"bfloat16": 918.0},
    "TPU v5 lite": {"bfloat16": 197.0}, "TPU v5e": {"bfloat16": 197.0},
    "TPU v5p": {"bfloat16": 459.0}, "TPU v5": {"bfloat16": 459.0},
    "TPU v4": {"bfloat16": 275.0},
    "NVIDIA H100": {"bfloat16": 989.0, "float32": 67.0},
    "NVIDIA H200": {"bfloat16": 989.0, "float32": 67.0},
    "NVIDIA A100": {"bfloat16": 312.0, "float32": 19.5},
}


def datasheet_peak_tflops(device_kind: str, dtype: str) -> float | None:
  """The datasheet peak of one device of `device_kind` computing in `dtype`, if known."""
  for kind in sorted(PEAK_TFLOPS, key=len, reverse=True):
    if device_kind.startswith(kind):
      return PEAK_TFLOPS[kind].get(dtype)
  return None


def measured_matmul_tflops(dtype: str = "float32", size: int = 512, repeats: int = 20,
                           fastest: bool = False) -> float:
  """XLA's rate on one local device for a [4096, size] x [size, size] matmul in `dtype`.

  The median of `repeats` runs, or with `fastest` the fastest one: what the device can do even
  when other processes share the host (a run's MFU denominator must not drop with the load).

  The stand-in peak where no datasheet figure applies (CPUs): the best the compiler does on a
  plain large matmul here, so MFU says how close the step gets to this machine's own matmul.
  """
  # Host arrays put on one local device: under a run's mesh, jnp.ones would make global ones.
  device = jax.local_devices()[0]
  a = jax.device_put(np.ones((4096, size), jnp.dtype(dtype)), device)
  b = jax.device_put(np.ones((size, size), jnp.dtype(dtype)), device)
  matmul = jax.jit(jnp.matmul)
  matmul(a, b).block_until_ready()
  seconds = []
  for _ in range(repeats):
    start = time.perf_counter()
    matmul(a, b).block_until_ready()
    seconds.append(time.perf_counter() - start)
  return 2 * 4096 * size * size / float(min(seconds) if fastest else np.median(seconds)) / 1e12
