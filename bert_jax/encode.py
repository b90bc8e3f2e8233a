"""Sentence embeddings from the BERT encoder (a pure function, jit it with the model bound).

    embed_fn = jax.jit(functools.partial(encode.embed, model=modeling.BertModel(config)))
    embeddings = embed_fn(params["bert"], batch)  # {"cls", "pooled", "mean"}, each [B, H]

Three embeddings of each sequence, all float32 [batch, hidden]:

  cls     the last layer's hidden state of the first token ([CLS]), as the original's
          `get_sequence_output()[:, 0]`.
  pooled  the pooler's output, tanh(dense([CLS])): what the NSP and classification heads read.
          It was trained for next-sentence prediction, so it is a weak similarity feature
          before fine-tuning.
  mean    the average of the last layer's hidden states over the real tokens (input_mask 1),
          the usual sentence embedding (Sentence-BERT's mean pooling). Padding is left out:
          padded positions still get hidden states (they attend to the real tokens), and
          averaging them in would make a sentence's embedding depend on how far it was padded.

No dropout: the model runs deterministically.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert_jax import modeling


def embed(params, batch: dict[str, jax.Array], *, model: modeling.BertModel
          ) -> dict[str, jax.Array]:
  """The [CLS], pooled and mean embeddings of a batch.

  Args:
    params: The encoder's params (the tree under 'bert' in a pre-training or fine-tuning
      checkpoint), boxed or not.
    batch: `input_ids`, `segment_ids` and `input_mask`, each int32 [batch, length].
    model: The encoder, `modeling.BertModel`; its config's dtype is the compute dtype.

  Returns:
    {'cls', 'pooled', 'mean'}: float32 [batch, hidden] each.
  """
  sequence_output, pooled_output = model.apply(
      {"params": nn.meta.unbox(params)}, batch["input_ids"], batch["segment_ids"],
      batch["input_mask"], deterministic=True)
  sequence_output = sequence_output.astype(jnp.float32)  # [batch, length, hidden]
  mask = batch["input_mask"].astype(jnp.float32)[..., None]  # [batch, length, 1]
  # A row with no real token (all padding) gets a zero embedding rather than NaN.
  count = jnp.maximum(jnp.sum(mask, axis=1), 1.0)  # [batch, 1]
  return {
      "cls": sequence_output[:, 0],
      "pooled": pooled_output.astype(jnp.float32),
      "mean": jnp.sum(sequence_output * mask, axis=1) / count,  # [batch, hidden]
  }
