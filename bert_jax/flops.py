"""Model FLOPs of BERT's steps, from the architecture (for MFU, AOT and benchmark reports).

Counted from the shapes, not from XLA's cost_analysis, which counts a scanned layer once instead
of num_hidden_layers times and reports per-device figures of sharded programs.
"""

import ml_collections


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
