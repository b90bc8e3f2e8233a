"""Sentence-embedding inference of bert_jax vs transformers' BERT (PyTorch, and Flax where it runs).

    python -m bench.encode --preset=small                   # L4/H256/A4/I1024, vocab 30522
    python -m bench.encode                                  # BERT-Base (L12/H768/A12/I3072)
    [--batch_size=32 --seq_length=128 --steps=20 --warmup=3 --dtype=float32|bfloat16
     --frameworks=bert_jax,torch,flax --torch_threads=2]

Every framework runs the same encoder config's forward pass, without dropout, on the same host
batch (the same token ids, padding and segments; bench/train_step.py's random batches) and
returns the three embeddings of `bert_jax.encode`: the [CLS] hidden state, the pooler's output
and the mean of the hidden states over the real tokens:

  bert_jax  `jax.jit(functools.partial(encode.embed, model=modeling.BertModel(config)))`;
            --dtype=bfloat16 sets BertConfig.dtype (float32 params, bfloat16 activations and
            matmuls, float32 softmax and LayerNorm statistics).
  torch     `transformers.BertModel(...).eval()` under `torch.inference_mode()`, the embeddings
            computed from its outputs, torch.set_num_threads(--torch_threads, 2 by default = the
            cores here); --dtype=bfloat16 runs it under `torch.autocast(dtype=torch.bfloat16)`.
  flax      transformers' `FlaxBertModel` (dtype=--dtype), jitted with the same embeddings.
            Skipped with the reason if it does not import or run.

bert_jax and torch run the same weights (bert_jax's init, converted by hf_params.py), and before
timing the script prints the largest difference of their float32 embeddings: the benchmark
compares the same function, not just the same shapes. A call is timed until the embeddings are
on the host (jax: block_until_ready; torch: .numpy()), `--warmup` calls first (they include
jax's compile), then the median and p10/p90 of `--steps` calls, the frameworks one after
another in this process.

FLOPs are the forward matmuls (encoder + pooler), the same numerator for every framework; the
achieved GFLOP/s is compared with XLA's own fp32 matmul rate on this device (4096x512 @ 512x512,
measured here), as bench/train_step.py does.
"""

import argparse
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bench import harness
from bert_jax.finetuning import encode
from bert_jax.interop import hf_params
from bert_jax.model import flops
from bert_jax.model import modeling
from bert_jax.pretraining.data import synthetic

EMBEDDINGS = ("cls", "pooled", "mean")



def pretraining_params(model_config: modeling.BertConfig) -> dict:
  """A freshly initialised BertForPreTraining's params (host float32): the whole tree, so that
  hf_params can convert it; the encoder is its 'bert' subtree."""
  ids = jnp.zeros((1, 1), jnp.int32)
  model = modeling.BertForPreTraining(model_config)
  init = jax.jit(lambda rng: nn.meta.unbox(model.init(rng, ids, ids, ids, ids)["params"]))
  return jax.device_get(init(jax.random.key(0)))


def _jax_embed_fn(model_config: modeling.BertConfig):
  return jax.jit(functools.partial(encode.embed, model=modeling.BertModel(model_config)))


def _torch_model(config: ml_collections.ConfigDict, params: dict, device: str):
  """transformers.BertModel in eval mode with bert_jax's encoder weights."""
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel

  model = transformers.BertModel(transformers.BertConfig(**harness.hf_config_dict(config)))
  tensors = hf_params.hf_tensors_from_params(
      params, modeling.BertConfig.from_config(config.model))
  # A BertModel's state dict is BertForPreTraining's 'bert.' entries without the prefix.
  model.load_state_dict({name.removeprefix("bert."): torch.tensor(value)
                         for name, value in tensors.items() if name.startswith("bert.")})
  return model.to(device).eval()


def torch_embed(model, inputs: dict) -> dict[str, np.ndarray]:
  """encode.embed's three embeddings from HF's outputs, as float32 numpy (the host sync)."""
  import torch  # pylint: disable=import-outside-toplevel
  with torch.inference_mode():
    outputs = model(**inputs)
    hidden = outputs.last_hidden_state.float()  # [batch, length, hidden]
    mask = inputs["attention_mask"].unsqueeze(-1).float()  # [batch, length, 1]
    mean = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)  # [batch, hidden]
    embeddings = {"cls": hidden[:, 0], "pooled": outputs.pooler_output.float(), "mean": mean}
    return {name: value.cpu().numpy() for name, value in embeddings.items()}


def check_same_embeddings(config, params: dict, batch: dict[str, np.ndarray]) -> dict[str, float]:
  """Largest |bert_jax - torch| of each float32 embedding, both running `params`."""
  model_config = modeling.BertConfig.from_dict({**config.model.to_dict(), "dtype": "float32"})
  ours = jax.device_get(_jax_embed_fn(model_config)(params["bert"], batch))
  theirs = torch_embed(_torch_model(config, params, "cpu"), harness.torch_inputs(batch, "cpu"))
  return {name: float(np.max(np.abs(ours[name] - theirs[name]))) for name in EMBEDDINGS}


def run_bert_jax(config, params, batch, args) -> tuple[np.ndarray, str]:
  model_config = modeling.BertConfig.from_dict({**config.model.to_dict(), "dtype": args.dtype})
  embed_fn = _jax_embed_fn(model_config)
  device_params = jax.device_put(params["bert"])
  device_batch = jax.device_put({k: batch[k] for k in ("input_ids", "segment_ids", "input_mask")})

  def one_call():
    jax.block_until_ready(embed_fn(device_params, device_batch))

  return harness.time_calls(one_call, args.warmup, args.steps), (
      f"jax {jax.__version__}, compute {args.dtype}, scan_layers={model_config.scan_layers}")


def run_torch(config, params, batch, args) -> tuple[np.ndarray, str]:
  import contextlib  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel

  device = harness.torch_device(args)
  model = _torch_model(config, params, device)
  inputs = harness.torch_inputs(batch, device)
  # Params stay float32; autocast runs the matmuls in bfloat16, as BertConfig.dtype does ours.
  precision = (torch.autocast(device, dtype=torch.bfloat16) if args.dtype == "bfloat16"
               else contextlib.nullcontext())

  def one_call():
    with precision:
      torch_embed(model, inputs)

  return harness.time_calls(one_call, args.warmup, args.steps), (
      f"torch {torch.__version__}, {torch.get_num_threads()} threads, {device}, "
      f"attention '{model.config._attn_implementation}'")  # pylint: disable=protected-access


def run_flax(config, params, batch, args) -> tuple[np.ndarray, str]:
  del params  # Its own init: FlaxBertModel's param tree is laid out differently.
  import transformers  # pylint: disable=import-outside-toplevel

  model = transformers.FlaxBertModel(
      transformers.BertConfig(**harness.hf_config_dict(config)),
      seed=0, dtype=jnp.dtype(args.dtype))
  inputs = jax.device_put({"input_ids": batch["input_ids"], "attention_mask": batch["input_mask"],
                           "token_type_ids": batch["segment_ids"]})

  @jax.jit
  def embed(params, inputs):
    outputs = model(inputs["input_ids"], inputs["attention_mask"], inputs["token_type_ids"],
                    params=params, train=False)
    hidden = outputs.last_hidden_state.astype(jnp.float32)  # [batch, length, hidden]
    mask = inputs["attention_mask"].astype(jnp.float32)[..., None]  # [batch, length, 1]
    mean = jnp.sum(hidden * mask, axis=1) / jnp.maximum(jnp.sum(mask, axis=1), 1.0)
    return {"cls": hidden[:, 0], "pooled": outputs.pooler_output.astype(jnp.float32),
            "mean": mean}

  model_params = model.params

  def one_call():
    jax.block_until_ready(embed(model_params, inputs))

  return harness.time_calls(one_call, args.warmup, args.steps), (
      f"transformers {transformers.__version__}")


RUNNERS = {"bert_jax": run_bert_jax, "torch": run_torch, "flax": run_flax}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  harness.add_flags(parser, preset="base", batch_size=32, steps=20, warmup=3)
  parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                      help="compute dtype (params stay float32)")
  args, frameworks = harness.parse(parser)

  config = harness.config(args)
  model = config.model
  batch = synthetic.random_batch(args.batch_size, args.seq_length, 1, model.vocab_size,
                                 first_id=1000)
  params = pretraining_params(modeling.BertConfig.from_dict(model.to_dict()))
  difference = None
  if {"bert_jax", "torch"} <= set(frameworks):
    difference = check_same_embeddings(config, params, batch)
  results = {framework: harness.measure(RUNNERS[framework], framework, config, params, batch,
                                        args)
             for framework in frameworks}
  model_flops = flops.encoder_forward_flops(model, args.batch_size, args.seq_length)

  print(f"preset {args.preset}: L{model.num_hidden_layers}/H{model.hidden_size}/"
        f"A{model.num_attention_heads}/I{model.intermediate_size}, vocab {model.vocab_size}; "
        f"batch {args.batch_size} x seq {args.seq_length} "
        f"({int(batch['input_mask'].sum())} real tokens); {args.dtype} compute; "
        f"{harness.device_line()}; median of {args.steps} calls after {args.warmup}, one process")
  print(f"model FLOPs per forward (encoder + pooler matmuls): {model_flops / 1e9:.1f} G")
  if difference:
    print("same weights, float32: max |bert_jax - torch| "
          + ", ".join(f"{name} {value:.1e}" for name, value in difference.items()))
  harness.print_table(results, model_flops, args, unit="batch", rows="sentences")


if __name__ == "__main__":
  main()
