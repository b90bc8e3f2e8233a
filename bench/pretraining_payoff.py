"""Does pre-training pay off? Fine-tuning from a pre-trained model vs the same model from scratch.

    python -m bench.pretraining_payoff --pretrained=/tmp/tiny --output_dir=/tmp/payoff
    [--task=packages|word_order|replaced_word|FILE.csv --sentences=FILE.txt
     --labels=100,300,1000 --seed_check_labels=300 --seeds=3
     --learning_rates=3e-4,1e-3,3e-3 --epochs=30 --max_seq_length=64
     --num_validation=200 --num_test=600 --plot=curve.png]

For each number of labelled examples, both sides (the encoder of --pretrained, and the same
architecture and vocabulary from a random init) are fine-tuned with one recipe through
`bert_jax.finetune` (what `--config.mode=finetune` runs), each at its own best learning rate
of --learning_rates, chosen on a validation split of the labelled data by seed 0; the chosen
run is then scored once on a separate test split (fine-tuning does not depend on the eval file,
so the same seed gives the same model). At --seed_check_labels both sides also run with seeds
1..seeds-1 at their chosen rates: the mean over seeds is the headline. Beside them, a
bag-of-words baseline: logistic regression on word counts (L2 strength chosen on the same
validation split).

Tasks (made here):
  packages       bert_jax.finetuning.data.example_task's: which stdlib package a docstring
                 sentence is from (keyword-driven; its sentences are in the embedded pre-training corpus,
                 unlabelled).
  word_order     sentences of the Python language reference (pydoc_data/topics.py, text the
                 embedded corpus of docstrings does not hold; or of --sentences), half of them
                 with two plain words swapped: acceptable or not, as CoLA asks. Word counts are
                 the same either way, so the bag-of-words baseline is at chance.
  replaced_word  the same sentences, half with one plain word replaced by one drawn from the
                 text's own word frequencies (ELECTRA's task, as a sentence label).
  FILE.csv       your own `sentence,label` file (bench/unseen_text.py writes one, with the
                 one-sentence-per-line text to pre-train on).
(bench/payoff_tasks.py makes them.)
"""

import argparse
import collections
import json
import os
import re
import time

import numpy as np

import jax

from bert_jax.finetuning import encode
from bert_jax.finetuning import finetune
from bert_jax.interop import convert
from bert_jax.model import modeling
from bert_jax.tokenizers import tokenization
from bench import payoff_tasks
from configs import finetune as finetune_config

_WORD = re.compile(r"[a-z0-9]+")


def bag_of_words_accuracy(train, validation, test, strengths=(1e-3, 1e-2, 1e-1, 1.0)) -> float:
  """Test accuracy of L2 logistic regression on word counts, the strength chosen on validation."""
  vocabulary = {w: i for i, w in enumerate(sorted({w for s, _ in train
                                                   for w in _WORD.findall(s.lower())}))}
  labels = sorted({label for _, label in train})

  def features(rows):
    x = np.zeros((len(rows), len(vocabulary) + 1), np.float32)
    x[:, -1] = 1.0  # Bias.
    for row, (sentence, _) in enumerate(rows):
      for word in _WORD.findall(sentence.lower()):
        if word in vocabulary:
          x[row, vocabulary[word]] += 1.0
    y = np.array([labels.index(label) if label in labels else -1 for _, label in rows])
    return x, y

  (x_train, y_train), (x_val, y_val), (x_test, y_test) = map(features, (train, validation, test))
  best = (-1.0, None)
  for strength in strengths:
    weights = np.zeros((x_train.shape[1], len(labels)), np.float32)
    onehot = np.eye(len(labels), dtype=np.float32)[y_train]
    for _ in range(500):  # Full-batch gradient descent on the (convex) softmax loss.
      logits = x_train @ weights
      probs = np.exp(logits - logits.max(1, keepdims=True))
      probs /= probs.sum(1, keepdims=True)
      weights -= 0.5 * (x_train.T @ (probs - onehot) / len(x_train) + strength * weights)
    accuracy = float(np.mean(np.argmax(x_val @ weights, 1) == y_val))
    if accuracy > best[0]:
      best = (accuracy, weights)
  return float(np.mean(np.argmax(x_test @ best[1], 1) == y_test))


def representation_stats(pretrained: str, vocab_file: str, sentences: list[str],
                         max_seq_length: int) -> dict[str, float]:
  """How much the pre-trained encoder's sentence vectors differ between sentences.

  Mean pairwise cosine of the [CLS] vectors, of the pooled outputs and of the mean of the
  token vectors (1.0: every sentence gets the same vector), and the pooled output's mean
  per-dimension standard deviation across sentences.
  """
  model_config, params = convert.load_params(pretrained)
  tokenizer = tokenization.load_tokenizer(vocab_file)
  _, _, cls_id, sep_id, _ = tokenizer.special_ids
  ids = np.zeros((len(sentences), max_seq_length), np.int32)
  for row, sentence in enumerate(sentences):
    tokens = [cls_id] + tokenizer.encode(sentence)[:max_seq_length - 2] + [sep_id]
    ids[row, :len(tokens)] = tokens
  batch = {"input_ids": ids, "segment_ids": np.zeros_like(ids),
           "input_mask": (ids > 0).astype(np.int32)}
  vectors = jax.device_get(encode.embed(params["bert"], batch,
                                        model=modeling.BertModel(model_config)))
  stats = {}
  for name, matrix in vectors.items():
    unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    cosines = unit @ unit.T  # [sentences, sentences]
    stats[f"{name}_mean_cosine"] = float(cosines[np.triu_indices(len(unit), 1)].mean())
  stats["pooled_std"] = float(vectors["pooled"].std(axis=0).mean())
  return stats


def context_baselines(pretrained: str) -> dict[str, float]:
  """What counting alone predicts: accuracy on the eval records' tokens of the most frequent
  token, of the likeliest token after the left neighbour (bigram), and after both neighbours
  (trigram, backing off to the bigram), each counted on the training records.

  A pre-trained model below these has not yet learned what a table of its data knows.
  """
  import tensorflow as tf  # pylint: disable=import-outside-toplevel

  def sequences(pattern):
    for record in tf.data.TFRecordDataset(tf.io.gfile.glob(pattern)):
      features = tf.train.Example.FromString(record.numpy()).features.feature
      ids = np.array(features["input_ids"].int64_list.value)
      yield ids[np.array(features["input_mask"].int64_list.value) > 0]

  special = 5  # [PAD] [UNK] [CLS] [SEP] [MASK] come first in our vocabularies.
  unigram, bigram = collections.Counter(), collections.defaultdict(collections.Counter)
  trigram = collections.defaultdict(collections.Counter)
  for ids in sequences(os.path.join(pretrained, "data", "train*.tfrecord")):
    for i in range(1, len(ids) - 1):
      if ids[i] >= special:
        unigram[ids[i]] += 1
        bigram[ids[i - 1]][ids[i]] += 1
        trigram[ids[i - 1], ids[i + 1]][ids[i]] += 1
  most_frequent = unigram.most_common(1)[0][0]
  correct, total = collections.Counter(), 0
  for ids in sequences(os.path.join(pretrained, "data", "eval*.tfrecord")):
    for i in range(1, len(ids) - 1):
      if ids[i] < special:
        continue
      total += 1
      left = bigram.get(ids[i - 1])
      both = trigram.get((ids[i - 1], ids[i + 1])) or left
      correct["unigram"] += ids[i] == most_frequent
      correct["bigram"] += bool(left) and left.most_common(1)[0][0] == ids[i]
      correct["trigram"] += bool(both) and both.most_common(1)[0][0] == ids[i]
  return {name: float(count / max(total, 1)) for name, count in correct.items()}


class Runner:
  """Fine-tuning runs through bert_jax.finetune, each in its own workdir, results cached."""

  def __init__(self, args: argparse.Namespace, label_names: str):
    self.args = args
    self.label_names = label_names
    model_config, _ = convert.load_params(args.pretrained)
    self.model_fields = {k: getattr(model_config, k) for k in (
        "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
        "intermediate_size", "max_position_embeddings", "type_vocab_size",
        "hidden_dropout_prob", "attention_probs_dropout_prob")}
    self.seconds = 0.0

  def accuracy(self, init: str, train_file: str, eval_file: str, learning_rate: float,
               seed: int) -> float:
    name = (f"{init}_{os.path.basename(train_file)[:-4]}_{os.path.basename(eval_file)[:-4]}_"
            f"lr{learning_rate:g}_seed{seed}")
    workdir = os.path.join(self.args.output_dir, "runs", name)
    config = finetune_config.get_config()
    config.seed = seed
    config.task = "classification"
    config.init_checkpoint = self.args.pretrained if init == "pretrained" else ""
    if init == "scratch":  # The same architecture and vocabulary, from the original's init.
      config.model.update(self.model_fields)
    config.data.update(train_file=train_file, eval_file=eval_file,
                       label_names=self.label_names, max_seq_length=self.args.max_seq_length,
                       vocab_file=self.args.vocab_file)
    config.train.update(learning_rate=learning_rate, num_train_epochs=self.args.epochs,
                        reinit_top_layers=self.args.reinit_top_layers,
                        log_every_steps=10_000, checkpoint_every_steps=10_000,
                        # The optimizer BENCHMARKS' figures were measured with (issue 15),
                        # before fine-tuning's default became the original's (issue 35).
                        adam_bias_correction=True, schedule="warmup_then_decay")
    start = time.perf_counter()
    results = finetune.finetune(config, workdir)
    self.seconds += time.perf_counter() - start
    return float(next(iter(results.values()))["accuracy"])


def _vocab_file(pretrained: str) -> str | None:
  """The vocabulary of a pre-training workdir (as its data/ says), or of an imported model."""
  metadata = os.path.join(pretrained, "data", "metadata.json")
  if os.path.exists(metadata):
    with open(metadata, encoding="utf-8") as f:
      return json.load(f)["vocab_file"]
  vocab_file = os.path.join(pretrained, "vocab.txt")
  return vocab_file if os.path.exists(vocab_file) else None


# What a fine-tuning run in OUTPUT_DIR/runs depends on beyond its name (init, labels, eval split,
# learning rate, seed): a second invocation reuses finished runs, so these must not change.
_RUN_SETTINGS = ("pretrained", "task", "sentences", "epochs", "max_seq_length", "num_validation",
                 "num_test", "reinit_top_layers")


def _check_settings(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
  """Records the run settings in OUTPUT_DIR, or refuses ones that differ from those recorded."""
  settings = {name: getattr(args, name) for name in _RUN_SETTINGS}
  path = os.path.join(args.output_dir, "settings.json")
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      recorded = json.load(f)
    changed = [f"--{name}={settings[name]} (was {recorded.get(name)})" for name in settings
               if recorded.get(name) != settings[name]]
    if changed:
      parser.error(f"--output_dir={args.output_dir} holds runs made with other settings: "
                   f"{', '.join(changed)}; use a new --output_dir")
    return
  os.makedirs(args.output_dir, exist_ok=True)
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    json.dump(settings, f, indent=1)
  os.replace(path + ".tmp", path)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--pretrained", required=True, help="a pre-training workdir")
  parser.add_argument("--output_dir", required=True)
  parser.add_argument("--task", default="packages")
  parser.add_argument("--sentences", default="",
                      help="word_order/replaced_word: a one-sentence-per-line file to make the "
                      "task from (default: the language reference)")
  parser.add_argument("--labels", default="100,300,1000")
  parser.add_argument("--seed_check_labels", type=int, default=300)
  parser.add_argument("--seeds", type=int, default=3)
  parser.add_argument("--learning_rates", default="3e-4,1e-3,3e-3")
  # Tiny models from scratch need many passes over a few hundred examples: 10 epochs leave both
  # sides under-trained (their best rate at the top of the grid).
  parser.add_argument("--epochs", type=float, default=30.0)
  parser.add_argument("--max_seq_length", type=int, default=64)
  parser.add_argument("--num_validation", type=int, default=200)
  parser.add_argument("--num_test", type=int, default=600)
  parser.add_argument("--inits", default="pretrained,scratch")
  parser.add_argument("--reinit_top_layers", type=int, default=0,
                      help="fine-tuning's train.reinit_top_layers (from pre-training only)")
  parser.add_argument("--plot", default="", help="a PNG of the curves (needs matplotlib)")
  args = parser.parse_args()
  args.vocab_file = _vocab_file(args.pretrained)
  if args.vocab_file is None:
    parser.error(f"--pretrained={args.pretrained}: neither a pre-training workdir (with "
                 "data/metadata.json) nor a model directory with a vocab.txt")

  _check_settings(parser, args)
  rows = payoff_tasks.task_rows(args.task, args.sentences)
  test, validation = rows[:args.num_test], rows[args.num_test:args.num_test + args.num_validation]
  pool = rows[args.num_test + args.num_validation:]
  counts = [int(n) for n in args.labels.split(",")]
  if max(counts) > len(pool):
    parser.error(f"--labels: at most {len(pool)} training rows are left for {args.task}")
  data_dir = os.path.join(args.output_dir, "data")
  os.makedirs(data_dir, exist_ok=True)
  label_names = ",".join(sorted({label for _, label in rows}))
  files = {split: payoff_tasks.write_csv(os.path.join(data_dir, f"{split}.csv"), split_rows)
           for split, split_rows in (("validation", validation), ("test", test))}
  stats = representation_stats(args.pretrained, args.vocab_file,
                               [sentence for sentence, _ in test[:64]], args.max_seq_length)
  print("Pre-trained encoder on 64 test sentences: " + ", ".join(
      f"{name} {value:.3f}" for name, value in stats.items()), flush=True)
  baselines = {}
  if os.path.isdir(os.path.join(args.pretrained, "data")):  # A workdir: its records are there.
    baselines = context_baselines(args.pretrained)
    print("Counting on the pre-training records (eval tokens): " + ", ".join(
        f"{name} {value:.3f}" for name, value in baselines.items()), flush=True)
  runner = Runner(args, label_names)
  learning_rates = [float(x) for x in args.learning_rates.split(",")]
  inits = args.inits.split(",")
  report = collections.defaultdict(dict)
  for count in counts:
    train_rows = pool[:count]
    train_file = payoff_tasks.write_csv(os.path.join(data_dir, f"train{count}.csv"),
                                        train_rows)
    report[count]["bag_of_words"] = bag_of_words_accuracy(train_rows, validation, test)
    for init in inits:
      by_rate = {rate: runner.accuracy(init, train_file, files["validation"], rate, 0)
                 for rate in learning_rates}
      rate = max(by_rate, key=by_rate.get)
      seeds = range(args.seeds) if count == args.seed_check_labels else range(1)
      tests = [runner.accuracy(init, train_file, files["test"], rate, seed) for seed in seeds]
      report[count][init] = {"validation_by_learning_rate": by_rate, "learning_rate": rate,
                             "test_by_seed": tests, "test": float(np.mean(tests))}
      print(json.dumps({"labels": count, init: report[count][init]}), flush=True)

  print(f"\nTask {args.task}: {len(test)} test / {len(validation)} validation rows; fine-tuning "
        f"{args.epochs:g} epochs at the best of {args.learning_rates} (chosen on validation); "
        f"{runner.seconds / 60:.1f} min of fine-tuning\n")
  print("| labels | from pre-training | from scratch | gain | bag of words |")
  print("|---|---|---|---|---|")
  for count in counts:
    entry = report[count]
    cells = []
    for init in ("pretrained", "scratch"):
      if init not in entry:
        cells.append("")
        continue
      tests = entry[init]["test_by_seed"]
      spread = f" (seeds {', '.join(f'{t:.3f}' for t in tests)})" if len(tests) > 1 else ""
      cells.append(f"{entry[init]['test']:.3f} at lr {entry[init]['learning_rate']:g}{spread}")
    gain = (f"{100 * (entry['pretrained']['test'] - entry['scratch']['test']):+.1f} points"
            if "pretrained" in entry and "scratch" in entry else "")
    print(f"| {count} | {cells[0]} | {cells[1]} | {gain} | {entry['bag_of_words']:.3f} |")
  with open(os.path.join(args.output_dir, "payoff.json"), "w") as f:
    json.dump({"args": vars(args), "representation": stats, "context_baselines": baselines,
               "report": report}, f, indent=1)
  if args.plot:
    _plot(report, counts, args)


def _plot(report, counts, args) -> None:
  try:
    import matplotlib  # pylint: disable=import-outside-toplevel
  except ImportError:
    print("--plot: matplotlib is not installed (pip install matplotlib); no picture")
    return
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  figure, axes = plt.subplots(figsize=(6, 4))
  for key, label in (("pretrained", "fine-tuned from pre-training"),
                     ("scratch", "same model from a random init"), ("bag_of_words",
                                                                    "bag of words")):
    values = [report[c][key]["test"] if key != "bag_of_words" else report[c][key]
              for c in counts if key in report[c]]
    axes.plot(counts[:len(values)], values, marker="o", label=label)
  axes.set_xscale("log")
  axes.set_xlabel("labelled training examples")
  axes.set_ylabel("test accuracy")
  axes.set_title(f"{args.task}: does pre-training pay off?")
  axes.legend()
  figure.tight_layout()
  figure.savefig(args.plot, dpi=120)
  print(f"Wrote {args.plot}")


if __name__ == "__main__":
  main()
