"""The BERT model: config, encoder (embeddings, Transformer layers, pooler) and pre-training heads.

The architecture is exactly the original google-research/bert: post-LayerNorm, erf GELU,
LayerNorm epsilon 1e-12, learned absolute positions, token-type embeddings, a tanh pooler on
[CLS], an MLM transform (dense + GELU + LayerNorm) followed by a decoder tied to the word
embeddings plus an output bias, and NSP on the pooled output.

Every param carries logical axis names (see `sharding.py`); the model never names a mesh axis.
The layers are one `nn.scan` over a stacked 'layers' axis, so compile time does not grow with
depth.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert_jax import errors
from bert_jax.model import attention as attention_lib
from bert_jax.model import compute_dtype

_ACTIVATIONS = {
    "gelu": lambda x: nn.gelu(x, approximate=False),  # The original's erf GELU.
    "gelu_new": lambda x: nn.gelu(x, approximate=True),  # HF's name for the tanh approximation.
    "relu": nn.relu,
}
# What each layer keeps for the backward pass (`model.remat_policy`); the rest is recomputed.
REMAT_POLICIES = {
    "none": None,  # No rematerialisation: every activation is kept (fastest, most memory).
    "full": jax.checkpoint_policies.nothing_saveable,  # Only the layer's input is kept.
    "dots_saveable": jax.checkpoint_policies.dots_saveable,  # Matmul outputs kept.
    # Weight matmul outputs kept, attention scores ([batch, heads, q, k]) recomputed.
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """Hyperparameters of a BERT model, with the original's field names.

  `dtype` (compute dtype of activations and matmuls), `scan_layers` (one scanned layer body
  rather than num_hidden_layers unrolled copies), `remat_policy` (what the backward pass
  recomputes, one of REMAT_POLICIES) and `attention` (the attention implementation, one of
  attention.IMPLEMENTATIONS) are runtime choices, not part of the model: they change neither
  the params nor (beyond rounding) the numbers, and are not written to config.json.
  """
  vocab_size: int = 30522
  hidden_size: int = 768
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  intermediate_size: int = 3072
  hidden_act: str = "gelu"
  hidden_dropout_prob: float = 0.1
  attention_probs_dropout_prob: float = 0.1
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  initializer_range: float = 0.02
  layer_norm_eps: float = 1e-12
  dtype: str = "float32"
  scan_layers: bool = True
  remat_policy: str = "none"
  attention: str = "xla"

  # Fields that do not change the params: a checkpoint serves any value of them.
  RUNTIME_FIELDS = ("dtype", "scan_layers", "remat_policy", "attention")

  def __post_init__(self):
    if self.hidden_size % self.num_attention_heads:
      raise errors.UserError(
          f"model.hidden_size={self.hidden_size} is not divisible by "
          f"model.num_attention_heads={self.num_attention_heads}")
    if self.hidden_act not in _ACTIVATIONS:
      raise errors.UserError(f"model.hidden_act={self.hidden_act!r} is not one of "
                             f"{sorted(_ACTIVATIONS)}")
    if self.dtype == "auto":
      # A run resolves 'auto' when it validates its config (and says why); a model built
      # directly from a config (a notebook, a test) computes as jax's default backend would.
      object.__setattr__(self, "dtype", compute_dtype.choose("auto")[0])
    if self.dtype not in compute_dtype.DTYPES:
      raise errors.UserError(f"model.dtype={self.dtype!r} is not auto, float32, bfloat16 or "
                             "float16")
    if self.remat_policy not in REMAT_POLICIES:
      raise errors.UserError(f"model.remat_policy={self.remat_policy!r} is not one of "
                             f"{', '.join(REMAT_POLICIES)}")
    if self.attention not in attention_lib.IMPLEMENTATIONS:
      raise errors.UserError(f"model.attention={self.attention!r} is not one of "
                             f"{', '.join(attention_lib.IMPLEMENTATIONS)}")
    if self.attention == "cudnn" and self.dtype == "float32":
      raise errors.UserError("model.attention='cudnn' needs model.dtype='bfloat16' or "
                             "'float16': cuDNN flash attention has no float32")

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_attention_heads

  @property
  def compute_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.dtype)

  @classmethod
  def from_dict(cls, values: dict[str, Any]) -> "BertConfig":
    """Builds a config from our fields; an unknown key is an error that names it."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
      raise errors.UserError(
          f"unknown model config field(s): {', '.join('model.' + k for k in unknown)}")
    return cls(**values)

  @classmethod
  def from_config(cls, model_section: Any) -> "BertConfig":
    """The architecture a run config's `model` section describes."""
    return cls.from_dict(model_section.to_dict())

  def with_runtime_of(self, model_section: Any) -> "BertConfig":
    """This (a checkpoint's) architecture, with how the run computes it: config.model's dtype,
    scan, remat and attention."""
    return dataclasses.replace(self, **{k: model_section[k] for k in self.RUNTIME_FIELDS})


def _truncated_normal(stddev: float):
  """As the original's tf.truncated_normal_initializer: N(0, stddev) cut at 2 stddev, unscaled.

  (jax's truncated_normal rescales so the cut distribution has std `stddev`; TF's does not.)
  """
  def init(key, shape, dtype=jnp.float32):
    return jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype) * stddev
  return init


def weight_init(config: BertConfig, names: tuple[str | None, ...]):
  """The original's initializer for every weight, tagged with logical axis names."""
  return nn.with_logical_partitioning(_truncated_normal(config.initializer_range), names)


def zeros_init(names: tuple[str | None, ...]):
  return nn.with_logical_partitioning(nn.initializers.zeros_init(), names)


def _layer_norm(config: BertConfig, name: str) -> nn.LayerNorm:
  # Flax computes LayerNorm statistics in float32 even for bfloat16 inputs.
  return nn.LayerNorm(
      epsilon=config.layer_norm_eps, dtype=config.compute_dtype, name=name,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",)),
      bias_init=zeros_init(("embed",)))


def matmul(x: jax.Array, kernel: jax.Array, bias: jax.Array | None = None) -> jax.Array:
  """x [..., in] times kernel [in, out] (+ bias [out]), as one 2-D matmul [rows, in] x [in, out].

  The kernel and bias are params (float32), x is in the compute dtype. The products are those
  of an einsum over the last axis, accumulated in float32 with the bias added in float32, then
  rounded once to x's dtype (as torch.autocast's linear layers); the gradients are the same
  products again, each a plain 2-D matmul in x's dtype, with the kernel's and bias's gradients
  accumulated in float32. Why written out: XLA:CPU runs a bfloat16 dot that contracts over two
  axes (a kernel's gradient over batch and length), or mixes float32 and bfloat16 operands,
  without the CPU's matrix units, and sums a bfloat16 bias gradient by a slow windowed
  reduction; so autodiff of the einsum made bfloat16 training 2x slower than float32 there
  (docs/BENCHMARKS.md, "bfloat16 on the CPU's matrix units"). In float32 nothing changes.
  Merging leading axes is free on every backend and keeps their sharding.
  """
  rows = x.reshape(-1, x.shape[-1])  # [batch * length, in]
  output = _matmul_2d(rows, kernel, bias)  # [batch * length, out]
  return output.reshape(*x.shape[:-1], kernel.shape[-1])  # [..., out]


@jax.custom_vjp
def _matmul_2d(rows: jax.Array, kernel: jax.Array, bias: jax.Array | None) -> jax.Array:
  # [rows, in] x [in, out] -> [rows, out]
  output = jnp.dot(rows, kernel.astype(rows.dtype), preferred_element_type=jnp.float32)
  if bias is not None:
    output = output + bias.astype(jnp.float32)
  return output.astype(rows.dtype)


def _matmul_2d_forward(rows, kernel, bias):
  return _matmul_2d(rows, kernel, bias), (rows, kernel, bias)


def _matmul_2d_backward(residuals, d_output):
  rows, kernel, bias = residuals
  # [rows, out] x [in, out] -> [rows, in]
  d_rows = jax.lax.dot_general(d_output, kernel.astype(rows.dtype), (((1,), (1,)), ((), ())),
                               preferred_element_type=jnp.float32).astype(rows.dtype)
  # [in, rows] x [rows, out] -> [in, out]
  d_kernel = jnp.dot(rows.T, d_output, preferred_element_type=jnp.float32).astype(kernel.dtype)
  d_bias = (None if bias is None
            else jnp.sum(d_output.astype(jnp.float32), axis=0).astype(bias.dtype))  # [out]
  return d_rows, d_kernel, d_bias


_matmul_2d.defvjp(_matmul_2d_forward, _matmul_2d_backward)


class Dense(nn.Module):
  """nn.Dense's params ('kernel' [in, out], 'bias' [out]) computed by `matmul` in `dtype`."""
  features: int
  dtype: Any
  kernel_init: Any
  bias_init: Any

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features))
    bias = self.param("bias", self.bias_init, (self.features,))
    return matmul(x.astype(self.dtype), kernel, bias)


def _dense(config: BertConfig, features: int, names: tuple[str | None, str | None],
           name: str) -> Dense:
  return Dense(features, dtype=config.compute_dtype, name=name,
               kernel_init=weight_init(config, names), bias_init=zeros_init(names[1:]))


class BertEmbeddings(nn.Module):
  """Word + position + token-type embeddings, then LayerNorm and dropout."""
  config: BertConfig

  def setup(self):
    config = self.config
    self.word_embeddings = nn.Embed(
        config.vocab_size, config.hidden_size, dtype=config.compute_dtype,
        embedding_init=weight_init(config, ("vocab", "embed")))
    self.position_embeddings = nn.Embed(
        config.max_position_embeddings, config.hidden_size, dtype=config.compute_dtype,
        embedding_init=weight_init(config, (None, "embed")))
    self.token_type_embeddings = nn.Embed(
        config.type_vocab_size, config.hidden_size, dtype=config.compute_dtype,
        embedding_init=weight_init(config, (None, "embed")))
    self.layer_norm = _layer_norm(config, "LayerNorm")
    self.dropout = nn.Dropout(config.hidden_dropout_prob)

  def __call__(self, input_ids: jax.Array, segment_ids: jax.Array, deterministic: bool,
               position_ids: jax.Array | None = None) -> jax.Array:
    # Unpacked rows: positions 0..length-1, one table row broadcast over the batch.
    positions = (self.position_embeddings(jnp.arange(input_ids.shape[1]))[None]
                 if position_ids is None else self.position_embeddings(position_ids))
    embeddings = (self.word_embeddings(input_ids) + positions
                  + self.token_type_embeddings(segment_ids))  # [batch, length, embed]
    embeddings = self.layer_norm(embeddings)
    embeddings = self.dropout(embeddings, deterministic=deterministic)
    return nn.with_logical_constraint(embeddings, ("batch", "length", "embed"))


class BertSelfAttention(nn.Module):
  """Multi-head self-attention with its output projection, residual and LayerNorm.

  `attention_ids` [batch, length]: 0 for padding, else the token's example (attention.py);
  `packed` says whether a row holds several examples (static: it picks the mask's shape).
  `attention_mask`: attention.mask(attention_ids, packed), when the caller made it already
  (the encoder does, once for all layers).
  """
  config: BertConfig
  deterministic: bool
  packed: bool = False

  @nn.compact
  def __call__(self, hidden: jax.Array, attention_ids: jax.Array,
               attention_mask: jax.Array | None = None) -> jax.Array:
    config = self.config
    heads, head_dim = config.num_attention_heads, config.head_dim

    def projection(name):
      kernel = self.param(f"{name}_kernel", weight_init(config, ("embed", "heads", "kv")),
                          (config.hidden_size, heads, head_dim))
      bias = self.param(f"{name}_bias", zeros_init(("heads", "kv")), (heads, head_dim))
      dtype = config.compute_dtype
      # [batch, length, embed] x [embed, heads * head_dim] -> [batch, length, heads, head_dim]
      projected = matmul(hidden.astype(dtype),
                         kernel.reshape(config.hidden_size, heads * head_dim),
                         bias.reshape(heads * head_dim))
      return projected.reshape(*hidden.shape[:2], heads, head_dim)

    query = projection("query")
    key = projection("key")
    value = projection("value")
    use_dropout = not self.deterministic and config.attention_probs_dropout_prob > 0
    # Init only needs the params, which no implementation changes: it runs the XLA path, on any
    # backend and for any batch (its dummy batch of 1 would not split over a mesh).
    fused = (attention_lib.uses_kernel(config.attention, self.packed)
             and not self.is_initializing())
    if fused and use_dropout:
      # Also checked with the config, before anything is built; this catches every other caller.
      attention_lib.check_dropout(config.attention, config.attention_probs_dropout_prob)
    if attention_mask is None:
      attention_mask = attention_lib.mask(attention_ids, self.packed)
    if fused:
      # [batch, length, heads, head_dim]
      context = attention_lib.fused_attention(query, key, value, attention_ids, config.attention)
    elif use_dropout:
      # Written out: jax.nn.dot_product_attention has no dropout on the probabilities (the
      # original has). Heads first, both einsums are matmuls batched over (batch, heads), with
      # no layout copies around them on XLA:CPU (docs/BENCHMARKS.md, "CPU speed").
      query, key, value = (jnp.transpose(x, (0, 2, 1, 3)) for x in (query, key, value))
      # Scores and softmax in float32 whatever the compute dtype, as dot_product_attention does.
      scores = jnp.einsum("bhqd,bhkd->bhqk", query, key,
                          preferred_element_type=jnp.float32) / jnp.sqrt(head_dim)
      scores = jnp.where(attention_mask, scores, jnp.finfo(jnp.float32).min)
      probs = jax.nn.softmax(scores, axis=-1).astype(config.compute_dtype)  # [batch, heads, q, k]
      probs = nn.Dropout(config.attention_probs_dropout_prob)(probs, deterministic=False)
      context = jnp.einsum("bhqk,bhkd->bhqd", probs, value)  # [batch, heads, length, head_dim]
      context = jnp.transpose(context, (0, 2, 1, 3))  # [batch, length, heads, head_dim]
    else:
      context = jax.nn.dot_product_attention(query, key, value, mask=attention_mask)
    kernel = self.param("output_kernel", weight_init(config, ("heads", "kv", "embed")),
                        (heads, head_dim, config.hidden_size))
    bias = self.param("output_bias", zeros_init(("embed",)), (config.hidden_size,))
    # [batch, length, heads * head_dim] x [heads * head_dim, embed] -> [batch, length, embed]
    output = matmul(context.reshape(*context.shape[:2], heads * head_dim),
                    kernel.reshape(heads * head_dim, config.hidden_size), bias)
    output = nn.Dropout(config.hidden_dropout_prob)(output, deterministic=self.deterministic)
    return _layer_norm(config, "LayerNorm")(output + hidden)


class BertLayer(nn.Module):
  """One Transformer layer: attention, then the feed-forward block, each post-LayerNorm.

  Written as a scan body: `(carry, attention_ids, attention_mask) -> (carry, None)`.
  """
  config: BertConfig
  deterministic: bool
  packed: bool = False

  @nn.compact
  def __call__(self, hidden: jax.Array, attention_ids: jax.Array,
               attention_mask: jax.Array) -> tuple[jax.Array, None]:
    config = self.config
    hidden = nn.with_logical_constraint(hidden, ("batch", "length", "embed"))
    attention = BertSelfAttention(config, self.deterministic, self.packed, name="attention")(
        hidden, attention_ids, attention_mask)
    intermediate = _dense(config, config.intermediate_size, ("embed", "mlp"), "intermediate")(
        attention)
    intermediate = _ACTIVATIONS[config.hidden_act](intermediate)  # [batch, length, mlp]
    intermediate = nn.with_logical_constraint(intermediate, ("batch", "length", "mlp"))
    output = _dense(config, config.hidden_size, ("mlp", "embed"), "output")(intermediate)
    output = nn.Dropout(config.hidden_dropout_prob)(output, deterministic=self.deterministic)
    output = _layer_norm(config, "LayerNorm")(output + attention)
    return nn.with_logical_constraint(output, ("batch", "length", "embed")), None


class BertEncoder(nn.Module):
  """All layers as one scan: params get a leading 'layers' axis of size num_hidden_layers.

  With scan_layers=False the same scan is fully unrolled: the same params and numbers, one copy
  of the layer per depth in the compiled program (compile time grows with depth; XLA may
  schedule across layers).
  """
  config: BertConfig

  @nn.compact
  def __call__(self, hidden: jax.Array, attention_ids: jax.Array, deterministic: bool,
               packed: bool = False) -> jax.Array:
    config = self.config
    layer = BertLayer
    policy = REMAT_POLICIES[config.remat_policy]
    if config.remat_policy != "none":
      # Inside a scan the loop already keeps XLA from merging the recomputation back into the
      # forward pass, so CSE prevention (extra barriers) is only needed when unrolled.
      layer = nn.remat(BertLayer, policy=policy, prevent_cse=not config.scan_layers)
    layers = nn.scan(
        layer,
        variable_axes={"params": 0},
        split_rngs={"params": True, "dropout": True},
        in_axes=nn.broadcast,
        length=config.num_hidden_layers,
        unroll=1 if config.scan_layers else config.num_hidden_layers,
        metadata_params={nn.PARTITION_NAME: "layers"},
    )
    # The mask once, outside the scan: every layer attends the same way.
    attention_mask = attention_lib.mask(attention_ids, packed)
    hidden, _ = layers(config, deterministic, packed, name="layer")(hidden, attention_ids,
                                                                    attention_mask)
    return hidden


class BertModel(nn.Module):
  """The BERT encoder: `(sequence_output [B, L, H], pooled_output [B, H])`.

  Packed rows (finetuning/data/packing.py) also pass `position_ids` [B, L] (restarting at 0
  in each example), `example_ids` [B, L] (1, 2, ... per example, 0 for padding; no token
  attends across examples) and `cls_positions` [B, K] (each example's [CLS]): the pooled output
  is then [B, K, H], one per example slot.
  """
  config: BertConfig

  def setup(self):
    config = self.config
    self.embeddings = BertEmbeddings(config)
    self.encoder = BertEncoder(config)
    self.pooler = _dense(config, config.hidden_size, ("embed", None), "pooler")

  def __call__(self, input_ids: jax.Array, segment_ids: jax.Array, input_mask: jax.Array,
               deterministic: bool = True, position_ids: jax.Array | None = None,
               example_ids: jax.Array | None = None, cls_positions: jax.Array | None = None
               ) -> tuple[jax.Array, jax.Array]:
    hidden = self.embeddings(input_ids, segment_ids, deterministic, position_ids)
    # An unpacked row is one example: its real tokens are example 1, padding 0.
    packed = example_ids is not None
    attention_ids = (example_ids if packed else input_mask).astype(jnp.int32)  # [batch, length]
    sequence_output = self.encoder(hidden, attention_ids, deterministic, packed)
    if cls_positions is None:
      cls = sequence_output[:, 0]  # [batch, embed]
    else:
      # [batch, slots, embed]: each example's own [CLS].
      cls = jnp.take_along_axis(sequence_output, cls_positions[..., None], axis=1)
    return sequence_output, jnp.tanh(self.pooler(cls))


# A batch's inputs for packed rows, passed to the models by keyword when present.
PACKING_INPUTS = ("position_ids", "example_ids", "cls_positions")


def packing_inputs(batch: dict[str, Any]) -> dict[str, Any]:
  """The packed-row inputs a batch carries (none for unpacked rows)."""
  return {key: batch[key] for key in PACKING_INPUTS if key in batch}


class BertPreTrainingHeads(nn.Module):
  """`cls/predictions` (MLM on gathered positions) and `cls/seq_relationship` (NSP)."""
  config: BertConfig

  @nn.compact
  def __call__(self, sequence_output: jax.Array, pooled_output: jax.Array,
               masked_lm_positions: jax.Array, word_embeddings: nn.Embed
               ) -> tuple[jax.Array, jax.Array]:
    config = self.config
    # [batch, predictions, embed]: the head runs on the masked positions only, never on every
    # token, which saves a [batch, length, vocab] matmul.
    hidden = jnp.take_along_axis(sequence_output, masked_lm_positions[..., None], axis=1)
    predictions = _Predictions(config, name="predictions")
    mlm_logits = predictions(hidden, word_embeddings)  # [batch, predictions, vocab]
    nsp_logits = _dense(config, 2, ("embed", None), "seq_relationship")(pooled_output)
    return mlm_logits, nsp_logits.astype(jnp.float32)  # [batch, 2]


class _Predictions(nn.Module):
  """MLM transform (dense + activation + LayerNorm), tied decoder, output bias."""
  config: BertConfig

  @nn.compact
  def __call__(self, hidden: jax.Array, word_embeddings: nn.Embed) -> jax.Array:
    config = self.config
    hidden = _dense(config, config.hidden_size, ("embed", None), "transform_dense")(hidden)
    hidden = _ACTIVATIONS[config.hidden_act](hidden)
    hidden = _layer_norm(config, "transform_LayerNorm")(hidden)
    # Tied decoder: [batch, predictions, embed] x [embed, vocab] -> [batch, predictions, vocab]
    logits = matmul(hidden, word_embeddings.embedding.T)
    output_bias = self.param("output_bias", zeros_init(("vocab",)), (config.vocab_size,))
    return logits.astype(jnp.float32) + output_bias


class BertForPreTraining(nn.Module):
  """BERT with the MLM and NSP heads; the encoder's params live under 'bert'."""
  config: BertConfig

  def setup(self):
    self.bert = BertModel(self.config)
    self.cls = BertPreTrainingHeads(self.config)

  def __call__(self, input_ids: jax.Array, segment_ids: jax.Array, input_mask: jax.Array,
               masked_lm_positions: jax.Array, deterministic: bool = True
               ) -> tuple[jax.Array, jax.Array]:
    """Returns `(mlm_logits [B, P, V], nsp_logits [B, 2])`, both float32."""
    sequence_output, pooled_output = self.bert(input_ids, segment_ids, input_mask, deterministic)
    return self.cls(sequence_output, pooled_output, masked_lm_positions,
                    self.bert.embeddings.word_embeddings)
