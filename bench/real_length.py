"""Fine-tuning and embeddings on real-length sentences: bert_jax packed and unpacked vs
transformers, on the same weights, data, recipe and accuracy, in one process.

    python -m bert_jax.finetuning.data.example_task --output_dir=/tmp/qs_task
    python -m bench.real_length --task_dir=/tmp/qs_task --vocab_file=/tmp/qs_tiny/data/vocab.model
    [--preset=small --max_seq_length=64 --batch_size=32 --epochs=1 --learning_rate=5e-5
     --rounds=4 --torch_threads=2]

The task is the example task (a docstring sentence -> its package, 4 labels; real sentences of
varied length, histogram printed), tokenized once by bert_jax's featurizer, so every framework
sees the same token ids. The model is --init_checkpoint's (or the preset's size with a
random init), the same weights in each framework (the classifier head too); dropout 0.1; AdamW
with BERT's decay mask, warmup 10% and linear decay, gradients clipped to 1.0; `--epochs` over
the same example order.

  packed    bert_jax with data.packing: rows hold several sentences; a step takes the rows
            of batch_size sentences on average (finetune.py's mapping).
  unpacked  bert_jax with every sentence padded to max_seq_length.
  torch     transformers' BertForSequenceClassification, each batch padded to its longest
            sentence (DataCollatorWithPadding's dynamic padding, HF Trainer's default).
  torch_fixed  the same, every sentence padded to max_seq_length (padding='max_length').
Ratios are to `torch`, the stronger of the two.

The epoch is cut into `--rounds` parts; each round runs its part for every framework in turn
(the first framework rotates), so slow and fast moments of this machine fall on all of them.
Examples/s is the epoch's examples over the summed time of its steps (jax's compile excluded,
done before; a step's time ends with its loss on the host). Dev accuracy after the last epoch.

Embeddings: every train and dev sentence (`cls`, `pooled` and `mean`), batches of
--encode_batch_size rows: bert_jax packed and unpacked, and transformers' BertModel on batches
sorted by length and padded to their longest (`torch`, as sentence-transformers encodes) or in
input order padded to max_seq_length (`torch_fixed`), alternating `--rounds` times; the largest
difference of the mean embeddings to torch's is printed.
"""

import argparse
import functools
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bench import encode as encode_bench
from bench import harness
from bert_jax.finetuning import finetune_program
from bert_jax.finetuning.data import featurize
from bert_jax.finetuning.data import packing
from bert_jax.finetuning.data import task_files
from bert_jax.interop import convert
from bert_jax.interop import hf_params
from bert_jax.model import families
from bert_jax.model import modeling
from bert_jax.runtime import optim
from bert_jax.runtime import precision
from bert_jax.runtime import train_state
from bert_jax.tokenizers import tokenization

FRAMEWORKS = ("packed", "unpacked", "torch", "torch_fixed")


def _flags() -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--task_dir", required=True, help="train.csv and dev.csv (example_task)")
  parser.add_argument("--vocab_file", required=True, help="SentencePiece .model or vocab.txt")
  parser.add_argument("--preset", choices=sorted(harness.PRESETS), default="small")
  parser.add_argument("--init_checkpoint", default="",
                      help="start from these weights (a bert_jax workdir, HF dir, ...) instead "
                      "of a random init at --preset's size")
  parser.add_argument("--max_seq_length", type=int, default=64)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--encode_batch_size", type=int, default=64)
  parser.add_argument("--epochs", type=int, default=1)
  parser.add_argument("--learning_rate", type=float, default=5e-5)
  parser.add_argument("--rounds", type=int, default=4)
  parser.add_argument("--torch_threads", type=int, default=2)
  parser.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), default="float32",
                      help="bert_jax's model.dtype ('auto': what a run on this machine picks); "
                      "transformers stays float32, its default")
  return parser.parse_args()


def _features(args, tokenizer, split: str, label_names=None
              ) -> tuple[dict[str, np.ndarray], tuple[str, ...]]:
  examples, label_names = task_files.read_text_examples(
      f"{args.task_dir}/{split}.csv", "--task_dir", split, "sentence", None, "label",
      False, label_names, 0)
  return featurize.encode_text_examples(examples, tokenizer, args.max_seq_length), label_names


def _histogram(lengths: np.ndarray, max_seq_length: int) -> str:
  edges = list(range(0, max_seq_length + 8, 8))
  counts, _ = np.histogram(lengths, bins=edges)
  bars = [f"  {lo + 1:3d}-{hi:3d} {count:5d} {'#' * int(60 * count / counts.max())}"
          for lo, hi, count in zip(edges, edges[1:], counts)]
  return "\n".join(bars)


def _config(args, vocab_size: int, num_steps: int) -> ml_collections.ConfigDict:
  config = harness.preset_config(args.preset, args.max_seq_length, args.batch_size)
  config.model.update(vocab_size=vocab_size, max_position_embeddings=max(args.max_seq_length, 64))
  config.train.update(learning_rate=args.learning_rate, num_train_steps=num_steps,
                      num_warmup_steps=int(0.1 * num_steps), max_grad_norm=1.0)
  config.model.dtype = args.dtype
  precision.resolve_dtype(config)
  return config


class _Jax:
  """bert_jax fine-tuning on packed or unpacked rows, as finetune.py runs it."""

  def __init__(self, config, model_config, params, train, num_labels, packed: bool, batch_size):
    self.model = finetune_program.create_model("classification", model_config, num_labels)
    tx = optim.create_optimizer(config.train)
    self.packed = packing.pack(train, packing.TEXT) if packed else None
    self.rows = (self.packed.features if packed
                 else {**train, "weights": np.ones(len(train["input_ids"]), np.float32)})
    self.step_rows = (packing.rows_per_step(batch_size, self.packed, 1) if packed
                      else batch_size)
    self.state = train_state.TrainState(step=jnp.array(0), params=params,
                                        opt_state=tx.init(params))
    step = jax.jit(functools.partial(finetune_program.finetune_step, model=self.model, tx=tx,
                                     loss=families.get("classification").loss),
                   donate_argnums=(0,))
    batch = {k: v[:self.step_rows] for k, v in self.rows.items()}
    self.step = step.lower(self.state, batch, jax.random.key(1)).compile()
    self.predict = jax.jit(functools.partial(finetune_program.predict_step, model=self.model))

  def run(self, steps: range, seed: int) -> None:
    loss = None
    for step in steps:
      indices = finetune_program.batch_indices(len(self.rows["input_ids"]), self.step_rows,
                                               step, seed)
      self.state, scalars = self.step(self.state, {k: v[indices] for k, v in self.rows.items()},
                                      jax.random.key(1))
      loss = scalars["loss"]
    jax.block_until_ready(loss)

  def accuracy(self, dev: dict[str, np.ndarray]) -> float:
    rows = packing.pack(dev, packing.TEXT) if self.packed else None
    logits = np.asarray(self.predict(self.state.params, rows.features if rows else dev))
    if rows:
      logits = packing.unpack(logits, rows, packing.TEXT)
    return float(np.mean(logits.argmax(-1) == dev["label_ids"]))


class _Torch:
  """transformers' BertForSequenceClassification with dynamic padding, the same weights."""

  def __init__(self, config, params, head, train, num_labels, batch_size, threads, dynamic):
    import torch  # pylint: disable=import-outside-toplevel
    import transformers  # pylint: disable=import-outside-toplevel
    torch.set_num_threads(threads)
    self.torch = torch
    self.model = transformers.BertForSequenceClassification(transformers.BertConfig(
        **harness.hf_config_dict(config), num_labels=num_labels))
    tensors = hf_params.hf_tensors_from_params(params, modeling.BertConfig.from_config(
        config.model))
    state = {name: torch.tensor(value) for name, value in tensors.items()
             if name.startswith("bert.")}
    state["classifier.weight"] = torch.tensor(np.asarray(head["kernel"]).T)  # [labels, hidden]
    state["classifier.bias"] = torch.tensor(np.asarray(head["bias"]))
    missing = self.model.load_state_dict(state, strict=False)
    assert not missing.missing_keys, missing.missing_keys
    self.optimizer = harness.torch_adamw(self.model, config.train)
    self.scheduler = transformers.get_linear_schedule_with_warmup(
        self.optimizer, config.train.num_warmup_steps, config.train.num_train_steps)
    self.train_features, self.batch_size = train, batch_size
    self.max_grad_norm = config.train.max_grad_norm
    self.dynamic = dynamic

  def _inputs(self, features, indices):
    longest = (int(features["input_mask"][indices].sum(1).max()) if self.dynamic  # To the longest.
               else features["input_ids"].shape[1])
    batch = {k: features[k][indices, :longest] for k in ("input_ids", "segment_ids",
                                                          "input_mask")}
    return harness.torch_inputs(batch, "cpu")

  def run(self, steps: range, seed: int) -> None:
    self.model.train()
    for step in steps:
      indices = finetune_program.batch_indices(len(self.train_features["input_ids"]),
                                               self.batch_size, step, seed)
      outputs = self.model(**self._inputs(self.train_features, indices),
                           labels=self.torch.tensor(self.train_features["label_ids"][indices],
                                                    dtype=self.torch.long))
      outputs.loss.backward()
      self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
      self.optimizer.step()
      self.scheduler.step()
      self.optimizer.zero_grad()
      outputs.loss.item()

  def accuracy(self, dev: dict[str, np.ndarray]) -> float:
    self.model.eval()
    predictions = []
    with self.torch.inference_mode():
      for start in range(0, len(dev["input_ids"]), 64):
        indices = np.arange(start, min(start + 64, len(dev["input_ids"])))
        predictions.append(self.model(**self._inputs(dev, indices)).logits.argmax(-1).numpy())
    return float(np.mean(np.concatenate(predictions) == dev["label_ids"]))


def _rounds(total: int, rounds: int) -> list[range]:
  bounds = np.linspace(0, total, rounds + 1).astype(int)
  return [range(a, b) for a, b in zip(bounds, bounds[1:])]


def finetuning(args, config, params, train, dev, num_labels) -> dict[str, dict]:
  model_config = modeling.BertConfig.from_config(config.model)
  head_model = finetune_program.create_model("classification", model_config, num_labels)
  init = head_model.init(jax.random.key(0), *families.model_inputs(
      {k: v[:1] for k, v in train.items()}))
  fresh = jax.device_get(nn.meta.unbox(init["params"]))
  # The same weights everywhere: the encoder of `params`, the classifier of this init.
  jax_params = {"bert": params["bert"], "classifier": fresh["classifier"]}
  runners = {
      "packed": _Jax(config, model_config, jax_params, train, num_labels, True, args.batch_size),
      "unpacked": _Jax(config, model_config, jax_params, train, num_labels, False,
                       args.batch_size),
      "torch": _Torch(config, params, fresh["classifier"], train, num_labels, args.batch_size,
                      args.torch_threads, dynamic=True),
      "torch_fixed": _Torch(config, params, fresh["classifier"], train, num_labels,
                            args.batch_size, args.torch_threads, dynamic=False),
  }
  seconds = dict.fromkeys(FRAMEWORKS, 0.0)
  steps_per_epoch = config.train.num_train_steps // args.epochs
  for epoch in range(args.epochs):
    for index, part in enumerate(_rounds(steps_per_epoch, args.rounds)):
      steps = range(epoch * steps_per_epoch + part.start, epoch * steps_per_epoch + part.stop)
      order = FRAMEWORKS[index % len(FRAMEWORKS):] + FRAMEWORKS[:index % len(FRAMEWORKS)]
      for name in order:
        start = time.perf_counter()
        runners[name].run(steps, seed=0)
        seconds[name] += time.perf_counter() - start
  examples = steps_per_epoch * args.epochs * args.batch_size
  results = {}
  for name in FRAMEWORKS:
    results[name] = {"examples_per_second": examples / seconds[name],
                     "epoch_seconds": seconds[name] / args.epochs,
                     "dev_accuracy": runners[name].accuracy(dev)}
  packed = runners["packed"].packed
  results["packed"]["note"] = (f"{packed.num_rows} rows for {len(packed.row)} sentences, "
                               f"{runners['packed'].step_rows} rows per step, padding "
                               f"{packed.padding_fraction():.1%}")
  return results


def embeddings(args, config, params, features) -> dict[str, dict]:
  model_config = modeling.BertConfig.from_config(config.model)
  embed = encode_bench._jax_embed_fn(model_config)  # pylint: disable=protected-access
  torch_model = encode_bench._torch_model(config, params, "cpu")  # pylint: disable=protected-access
  packed = packing.pack(features, packing.TEXT)
  count = len(features["input_ids"])
  batch = args.encode_batch_size

  def jax_rows(rows):
    outputs = [jax.device_get(embed(params["bert"], {k: v[s:s + batch] for k, v in rows.items()}))
               for s in range(0, len(rows["input_ids"]), batch)]
    return {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}

  order = np.argsort(-features["input_mask"].sum(1), kind="stable")

  def torch_rows(dynamic: bool):
    outputs = []
    for start in range(0, count, batch):
      indices = order[start:start + batch] if dynamic else np.arange(start,
                                                                     min(start + batch, count))
      longest = (int(features["input_mask"][indices].sum(1).max()) if dynamic
                 else features["input_ids"].shape[1])
      rows = {k: features[k][indices, :longest] for k in ("input_ids", "segment_ids",
                                                          "input_mask")}
      outputs.append(encode_bench.torch_embed(
          torch_model, harness.torch_inputs(rows, "cpu")))
    result = {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}
    if not dynamic:
      return result
    return {k: v[np.argsort(order)] for k, v in result.items()}  # Back to input order.

  calls = {"packed": lambda: packing.unpack(jax_rows(packed.features), packed, packing.TEXT),
           "unpacked": lambda: jax_rows(features), "torch": lambda: torch_rows(True),
           "torch_fixed": lambda: torch_rows(False)}
  outputs = {name: call() for name, call in calls.items()}  # Warmup (jax compiles).
  seconds = dict.fromkeys(FRAMEWORKS, 0.0)
  for index in range(args.rounds):
    for name in FRAMEWORKS[index % len(FRAMEWORKS):] + FRAMEWORKS[:index % len(FRAMEWORKS)]:
      start = time.perf_counter()
      calls[name]()
      seconds[name] += time.perf_counter() - start
  return {name: {"sentences_per_second": count * args.rounds / seconds[name],
                 "max_mean_difference_to_torch": float(np.max(np.abs(
                     outputs[name]["mean"] - outputs["torch"]["mean"])))}
          for name in FRAMEWORKS}


def main() -> None:
  args = _flags()
  tokenizer = tokenization.load_tokenizer(args.vocab_file)
  train, label_names = _features(args, tokenizer, "train")
  dev, _ = _features(args, tokenizer, "dev", label_names)
  lengths = train["input_mask"].sum(1)
  print(f"{len(lengths)} training sentences, tokens incl. [CLS]/[SEP]: median "
        f"{int(np.median(lengths))}, mean {lengths.mean():.1f}, max {lengths.max()} (cut at "
        f"{args.max_seq_length}); padding at {args.max_seq_length}: "
        f"{1 - lengths.mean() / args.max_seq_length:.1%}")
  print(_histogram(lengths, args.max_seq_length))
  num_steps = args.epochs * (len(lengths) // args.batch_size)
  config = _config(args, tokenizer.vocab_size, num_steps)
  if args.init_checkpoint:
    loaded, params = convert.load_params(args.init_checkpoint)
    config.model.update({k: getattr(loaded, k) for k in harness.hf_config_dict(config)
                         if k != "layer_norm_eps"})
    params = jax.device_get(params)
    source = args.init_checkpoint
  else:
    params = encode_bench.pretraining_params(
        modeling.BertConfig.from_config(config.model))
    source = f"preset {args.preset}, random init"
  print(f"Model: L{config.model.num_hidden_layers}/H{config.model.hidden_size} ({source}), the "
        f"same weights in each framework; bert_jax computes in {config.model.dtype}, "
        f"transformers in float32; {harness.device_line()}")
  tuned = finetuning(args, config, params, train, dev, len(label_names))
  print(f"\nFine-tuning: {args.epochs} epoch(s) of {num_steps // args.epochs} steps of "
        f"{args.batch_size} sentences, lr {args.learning_rate}, in {args.rounds} alternating "
        "rounds")
  print(f"{'':11s} {'examples/s':>11s} {'epoch s':>8s} {'vs torch':>9s} {'dev acc':>8s}")
  for name, result in tuned.items():
    ratio = result["examples_per_second"] / tuned["torch"]["examples_per_second"]
    print(f"{name:11s} {result['examples_per_second']:11.1f} {result['epoch_seconds']:8.1f} "
          f"{ratio:8.2f}x {result['dev_accuracy']:8.4f}  {result.get('note', '')}")
  both = {k: np.concatenate([train[k], dev[k]]) for k in ("input_ids", "segment_ids",
                                                          "input_mask")}
  embedded = embeddings(args, config, params, both)
  print(f"\nEmbeddings of {len(both['input_ids'])} sentences, {args.rounds} alternating rounds, "
        f"batches of {args.encode_batch_size} rows")
  print(f"{'':11s} {'sentences/s':>12s} {'vs torch':>9s} {'max |mean - torch|':>19s}")
  for name, result in embedded.items():
    ratio = result["sentences_per_second"] / embedded["torch"]["sentences_per_second"]
    print(f"{name:11s} {result['sentences_per_second']:12.1f} {ratio:8.2f}x "
          f"{result['max_mean_difference_to_torch']:19.2e}")


if __name__ == "__main__":
  main()
