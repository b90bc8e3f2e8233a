"""The fused attention kernels behind `model.attention`, and the checks that go with them.

'xla' is `jax.nn.dot_product_attention` as XLA compiles it (modeling.py calls it directly);
'cudnn' is cuDNN's flash attention on NVIDIA GPUs; 'splash' is the Pallas TPU splash-attention
kernel (jax.experimental.pallas.ops.tpu.splash_attention). The kernels never materialise the
[batch, heads, q, k] scores and have no dropout on the attention probabilities.

Every path reads who may attend to whom from `ids` [batch, length] int: 0 for padding, else the
token's example. An unpacked row is `input_mask` (one example, id 1, real tokens first); a
packed row (data.packing) numbers its examples 1, 2, ... and no token attends across them.
'xla' turns ids into a boolean mask (`mask`): over the keys only when unpacked, as the original
does, [batch, 1, length, length] when packed; splash takes them natively as its segment ids;
cuDNN takes an unpacked row's key lengths, and a packed batch runs the 'xla' path (cuDNN's
masks are padding or causal, not block-diagonal).
"""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu import splash_attention as splash

from bert_jax import errors

# model.attention -> the JAX backend it runs on (None: any).
IMPLEMENTATIONS = {"xla": None, "cudnn": "gpu", "splash": "tpu"}
# Splash's blocks are multiples of the TPU's 128 lanes: shorter or ragged lengths are padded.
_SPLASH_LANES = 128


def check_platform(attention: str, platform: str) -> None:
  """A kernel asked for on a backend that cannot run it fails here, before any compile.

  Args:
    attention: model.attention.
    platform: The backend the program is compiled for: jax.default_backend(), or 'tpu' when
      compiling ahead of time for a TPU slice from another host (aot.py).

  Raises:
    errors.UserError: Naming model.attention and the backend.
  """
  needed = IMPLEMENTATIONS.get(attention)
  if needed is not None and platform != needed:
    raise errors.UserError(f"model.attention={attention!r} runs only on {needed.upper()}, but "
                           f"the backend is {platform!r}: use model.attention='xla'")


def check_dropout(attention: str, attention_probs_dropout_prob: float) -> None:
  """The fused kernels have no dropout on the attention probabilities: never drop it silently.

  Raises:
    errors.UserError: When training with a kernel and attention_probs_dropout_prob > 0.
  """
  if attention != "xla" and attention_probs_dropout_prob > 0:
    raise errors.UserError(
        f"model.attention={attention!r} has no dropout on the attention probabilities but "
        f"model.attention_probs_dropout_prob={attention_probs_dropout_prob}: set "
        "--config.model.attention_probs_dropout_prob=0 (as MosaicBERT trains), or "
        "model.attention='xla'")


def mask(ids: jax.Array, packed: bool) -> jax.Array:
  """Who attends to whom, for the 'xla' path: True where a query may see a key.

  Unpacked: [batch, 1 (heads), 1 (queries), length (keys)], the real keys, for every query (the
  original's mask: padded queries see the real keys; nothing reads them). Packed: [batch, 1,
  length, length], the keys of the query's own example (padding sees padding, never an example).
  """
  if not packed:
    return (ids > 0)[:, None, None, :]
  return (ids[:, :, None] == ids[:, None, :])[:, None]


def key_lengths(ids: jax.Array) -> jax.Array:
  """[batch, length] ids of unpacked rows -> [batch] int32 count of real tokens (cuDNN's form)."""
  return jnp.sum(ids > 0, axis=1, dtype=jnp.int32)


def cudnn_attention(query: jax.Array, key: jax.Array, value: jax.Array,
                    ids: jax.Array) -> jax.Array:
  """cuDNN flash attention, [batch, length, heads, head_dim] in and out (bfloat16/float16).

  The padding goes in as key lengths (cuDNN's PADDING mask type) rather than as a mask, which
  jax would turn into an additive [batch, 1, 1, length] bias: the kernel then skips the padded
  keys instead of adding -inf to them. Queries are not masked, as in the 'xla' path.
  """
  return jax.nn.dot_product_attention(query, key, value, key_value_seq_lengths=key_lengths(ids),
                                      implementation="cudnn")


def _block_size(length: int) -> int:
  # Untuned (no TPU to measure on): MaxText's splash default is 512; BERT's 128 takes 128.
  return next(size for size in (512, 256, _SPLASH_LANES) if length % size == 0)


def _splash_shard(query: jax.Array, key: jax.Array, value: jax.Array, segment_ids: jax.Array,
                  *, interpret: bool) -> jax.Array:
  """The kernel on one device's share: [batch, heads, length, head_dim], ids [batch, length]."""
  _, heads, length, _ = query.shape
  block = _block_size(length)
  block_sizes = splash.BlockSizes(
      block_q=block, block_kv=block, block_kv_compute=block,
      block_q_dkv=block, block_kv_dkv=block, block_kv_dkv_compute=block,
      block_q_dq=block, block_kv_dq=block)
  # Every query may see every key; the padding is masked by the segment ids, which splash
  # applies on top of this (static) mask.
  mask = splash.MultiHeadMask([splash.FullMask((length, length))] * heads)
  kernel = splash.make_splash_mha(mask, block_sizes=block_sizes, head_shards=1, q_seq_shards=1,
                                  interpret=interpret)

  def one_example(q, k, v, ids):  # [heads, length, head_dim] each, ids [length]
    return kernel(q, k, v, segment_ids=splash.SegmentIds(q=ids, kv=ids))
  return jax.vmap(one_example)(query, key, value, segment_ids)


def _mesh_spec(names: tuple[str | None, ...], shape: tuple[int, ...],
               mesh: jax.sharding.AbstractMesh) -> jax.sharding.PartitionSpec:
  """The logical names' mesh axes, replicated along a dimension they do not divide evenly."""
  spec = nn.logical_to_mesh_axes(names)
  dims = []
  for size, axes in zip(shape, spec):
    axes_tuple = (axes,) if isinstance(axes, str) else tuple(axes or ())
    devices = math.prod(mesh.shape[a] for a in axes_tuple)
    dims.append(axes if axes_tuple and size % devices == 0 else None)
  return jax.sharding.PartitionSpec(*dims)


def splash_attention(query: jax.Array, key: jax.Array, value: jax.Array, ids: jax.Array,
                     *, interpret: bool = False) -> jax.Array:
  """Pallas splash attention on TPU, [batch, length, heads, head_dim] in and out.

  The ids go in as segment ids: a query attends only to keys of its own segment. Unpacked,
  real tokens are segment 1 and padding 0: real queries see exactly the real keys, as in the
  'xla' path; padded queries see only padding keys (the unpacked 'xla' path lets them see the
  real ones): their outputs differ, and nothing reads them. Packed, each example is a segment.

  Under a mesh the kernel runs in a shard_map over batch and heads (a pallas_call is opaque to
  XLA's partitioner, which would otherwise gather every device's q, k, v to each device).

  Args:
    query: [batch, length, heads, head_dim]; key and value the same.
    ids: [batch, length] int: 0 for padding, else the token's example (module docstring).
    interpret: Run the kernel in the Pallas interpreter, on any backend (tests on CPU).

  Returns:
    [batch, length, heads, head_dim], query's dtype.
  """
  batch, length, _, head_dim = query.shape
  padded = -(-length // _SPLASH_LANES) * _SPLASH_LANES
  # The kernel does not scale the logits: scale the queries (exact for head_dim 64: 1/8).
  query = query * jnp.asarray(1 / math.sqrt(head_dim), query.dtype)

  def to_heads_major(x):
    x = jnp.transpose(x, (0, 2, 1, 3))  # [batch, heads, length, head_dim]
    return jnp.pad(x, ((0, 0), (0, 0), (0, padded - length), (0, 0)))  # [.., padded, ..]
  query, key, value = to_heads_major(query), to_heads_major(key), to_heads_major(value)
  segment_ids = jnp.pad(ids.astype(jnp.int32), ((0, 0), (0, padded - length)))  # [batch, padded]

  shard = functools.partial(_splash_shard, interpret=interpret)
  mesh = jax.sharding.get_abstract_mesh()
  if not mesh.empty:
    qkv_spec = _mesh_spec(("batch", "heads", None, None), query.shape, mesh)
    ids_spec = jax.sharding.PartitionSpec(qkv_spec[0], None)
    # check_vma=False: pallas_call does not track which mesh axes its outputs vary over.
    shard = jax.shard_map(shard, mesh=mesh, in_specs=(qkv_spec, qkv_spec, qkv_spec, ids_spec),
                          out_specs=qkv_spec, check_vma=False)
  context = shard(query, key, value, segment_ids)  # [batch, heads, padded, head_dim]
  return jnp.transpose(context[:, :, :length], (0, 2, 1, 3))  # [batch, length, heads, head_dim]


def uses_kernel(attention: str, packed: bool) -> bool:
  """Whether model.attention runs its fused kernel for these rows (else the 'xla' path)."""
  return attention == "splash" or (attention == "cudnn" and not packed)


def fused_attention(query: jax.Array, key: jax.Array, value: jax.Array, ids: jax.Array,
                    attention: str) -> jax.Array:
  """The kernel named by model.attention ('cudnn' or 'splash'); shapes as splash_attention."""
  if attention == "cudnn":
    return cudnn_attention(query, key, value, ids)
  if attention == "splash":
    return splash_attention(query, key, value, ids)
  raise ValueError(f"no fused kernel {attention!r}")
