"""How far an exported model agrees with bert_jax: tokenizer ids, and transformers' pipelines
against a fine-tuning workdir's own eval predictions (docs/converting.md's figures).

    python -m bench.hf_agreement --vocab_file=/tmp/qs_tiny/data/vocab.model
    python -m bench.hf_agreement --workdir=/tmp/qs_cls --export=/tmp/qs_cls_hf \
        --eval_file=/tmp/qs_task/dev.csv --text_key=sentence
    python -m bench.hf_agreement --workdir=/tmp/qs_sq --export=/tmp/qs_sq_hf \
        --eval_file=/tmp/qs_squad/dev.json --task=squad
    python -m bench.hf_agreement --workdir=/tmp/qs_mc --export=/tmp/qs_mc_hf \
        --eval_file=/tmp/qs_swag/dev.csv --task=multiple_choice

--vocab_file: the SentencePiece model's ids against its exported tokenizer.json on every
sentence of the embedded corpus and on --random_strings random Unicode strings; where they
differ on the corpus, whether it is an exact tie (the same pieces' total score).
--workdir/--export: a classification task's text-classification pipeline (truncation=True)
against WORKDIR's last eval predictions, label for label and probability for probability; or
a SQuAD task's exported model called as its README calls it (transformers 5 has no
question-answering pipeline), answer for answer, where the question and context fit in one
window; or a
multiple-choice task's BertForMultipleChoice on bert_jax's token ids against the eval
probabilities, and how many questions transformers' own truncation tokenizes otherwise.
"""

import argparse
import csv
import json
import os
import random

os.environ.setdefault("USE_TF", "0")  # transformers beside TensorFlow.

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import sentencepiece as spm  # pylint: disable=g-import-not-at-top,wrong-import-position

from bert_jax.interop import hf_tokenizer  # pylint: disable=wrong-import-position
from bert_jax.pretraining.data import corpus  # pylint: disable=wrong-import-position


def tokenizer_agreement(vocab_file: str, random_strings: int) -> None:
  tokenizer = hf_tokenizer.sentencepiece_tokenizer(vocab_file)
  processor = spm.SentencePieceProcessor(model_file=vocab_file)
  scores = [processor.GetScore(i) for i in range(processor.GetPieceSize())]
  sentences = [s for d in corpus.stdlib_documents() for s in d]
  ours = processor.Encode(sentences, out_type=int)
  theirs = [e.ids for e in tokenizer.encode_batch(sentences, add_special_tokens=False)]
  differ = [(a, b) for a, b in zip(ours, theirs) if a != b]
  ties = sum(abs(sum(scores[i] for i in a) - sum(scores[i] for i in b)) < 1e-4 * len(a)
             for a, b in differ)
  print(f"embedded corpus: {len(differ)} of {len(sentences)} sentences tokenize differently, "
        f"{ties} of them exact ties")
  rng = random.Random(0)
  points = lambda: rng.choice([rng.randint(32, 126), rng.randint(0xA0, 0x2FFF),  # noqa: E731
                               rng.randint(0x3000, 0x9FFF), 0x20, 0x3000, 9, 10])
  texts = ["".join(chr(points()) for _ in range(rng.randint(1, 30)))
           for _ in range(random_strings)]
  differ = sum(processor.Encode(t) != tokenizer.encode(t, add_special_tokens=False).ids
               for t in texts)
  print(f"random Unicode strings: {differ} of {random_strings} tokenize differently")


def _last_predictions(workdir: str) -> str:
  steps = sorted(os.listdir(os.path.join(workdir, "predictions")),
                 key=lambda name: int(name.split("_")[1]))
  return os.path.join(workdir, "predictions", steps[-1])


def classification_agreement(workdir: str, export: str, eval_file: str, text_key: str) -> None:
  import transformers  # pylint: disable=g-import-not-at-top
  rows = [json.loads(line) for line in open(os.path.join(_last_predictions(workdir),
                                                         "validation.jsonl"))]
  texts = [r[text_key] for r in csv.DictReader(open(eval_file))]
  pipe = transformers.pipeline("text-classification", model=export, device="cpu")
  outputs = pipe(texts, top_k=None, truncation=True, batch_size=32)
  same, difference = 0, 0.0
  for row, scores in zip(rows, outputs):
    scores = {d["label"]: d["score"] for d in scores}
    same += max(scores, key=scores.get) == row["prediction"]
    difference = max(difference, max(abs(scores[k] - p) for k, p in row["probabilities"].items()))
  print(f"text-classification: the same label for {same} of {len(rows)}; probabilities within "
        f"{difference:.2g}")


def squad_agreement(workdir: str, export: str, eval_file: str) -> None:
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from bert_jax.interop import convert  # pylint: disable=g-import-not-at-top
  predictions = json.load(open(os.path.join(_last_predictions(workdir),
                                            "validation_predictions.json")))
  max_seq_length = convert.load_params(workdir, return_report=True)[2].meta["max_seq_length"]
  # transformers 5 has no question-answering pipeline (4.x's windowed the long contexts): the
  # model is called as the export's README calls it, on the questions that fit in one window.
  model = transformers.AutoModelForQuestionAnswering.from_pretrained(export).eval()
  tokenizer = transformers.AutoTokenizer.from_pretrained(export)
  questions = [(q["id"], q["question"], p["context"]) for a in json.load(open(eval_file))["data"]
               for p in a["paragraphs"] for q in p["qas"]]
  same = one_window = 0
  for qid, question, context in questions:
    encoded = tokenizer(question, context, return_tensors="pt", return_offsets_mapping=True)
    offsets = encoded.pop("offset_mapping")[0].numpy()  # [length, 2]
    if len(offsets) > max_seq_length:
      continue
    one_window += 1
    with torch.no_grad():
      output = model(**encoded)
    context_tokens = np.flatnonzero((encoded["token_type_ids"][0].numpy() == 1) &
                                    (offsets[:, 1] > 0))
    start_logits, end_logits = output.start_logits[0].numpy(), output.end_logits[0].numpy()
    start, end = max(((s, e) for s in context_tokens for e in context_tokens if 0 <= e - s < 30),
                     key=lambda span: start_logits[span[0]] + end_logits[span[1]])
    same += context[offsets[start][0]:offsets[end][1]] == predictions[qid]
  print(f"question answering (the model as its README calls it): the same answer for {same} of "
        f"the {one_window} questions that fit in one window (of {len(questions)})")


def choice_agreement(workdir: str, export: str, eval_file: str, questions: int) -> None:
  import ml_collections  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from bert_jax.finetuning.data import choices  # pylint: disable=g-import-not-at-top
  from bert_jax.interop import convert  # pylint: disable=g-import-not-at-top
  from bert_jax.tokenizers import tokenization  # pylint: disable=g-import-not-at-top
  meta = convert.load_params(workdir, return_report=True)[2].meta
  length = meta["max_seq_length"]
  data = ml_collections.ConfigDict(dict(text_a_key="", text_b_key="", choice_keys="",
                                        label_key="", max_examples=questions))
  examples = choices.read(eval_file, "--eval_file", "validation", data)
  ours = choices.encode(examples, tokenization.load_tokenizer(meta["vocab_file"]), length)
  rows = [json.loads(line) for line in open(os.path.join(_last_predictions(workdir),
                                                         "validation.jsonl"))][:len(examples)]
  model = transformers.AutoModelForMultipleChoice.from_pretrained(export).eval()
  with torch.no_grad():
    logits = model(input_ids=torch.from_numpy(ours["input_ids"]).long(),
                   token_type_ids=torch.from_numpy(ours["segment_ids"]).long(),
                   attention_mask=torch.from_numpy(ours["input_mask"]).long()).logits.numpy()
  probabilities = np.exp(logits - logits.max(-1, keepdims=True))
  probabilities /= probabilities.sum(-1, keepdims=True)
  difference = np.abs(probabilities - [r["probabilities"] for r in rows]).max()
  tokenizer = transformers.AutoTokenizer.from_pretrained(export)
  truncated_otherwise = sum(
      not np.array_equal(tokenizer([e.context] * len(e.endings),
                                   [f"{e.start} {ending}".strip() for ending in e.endings],
                                   truncation=True, max_length=length, padding="max_length",
                                   return_tensors="np")["input_ids"], ids)
      for e, ids in zip(examples, ours["input_ids"]))
  print(f"BertForMultipleChoice on bert_jax's ids: probabilities within {difference:.2g} over "
        f"{len(examples)} questions; transformers' tokenizer (truncation=True) gives other ids "
        f"for {truncated_otherwise} of them")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--vocab_file", default="")
  parser.add_argument("--random_strings", type=int, default=20_000)
  parser.add_argument("--workdir", default="")
  parser.add_argument("--export", default="")
  parser.add_argument("--eval_file", default="")
  parser.add_argument("--text_key", default="sentence")
  parser.add_argument("--task", default="classification",
                      choices=["classification", "squad", "multiple_choice"])
  parser.add_argument("--questions", type=int, default=40, help="multiple choice: how many")
  args = parser.parse_args()
  if args.vocab_file:
    tokenizer_agreement(args.vocab_file, args.random_strings)
  if args.workdir and args.task == "squad":
    squad_agreement(args.workdir, args.export, args.eval_file)
  elif args.workdir and args.task == "multiple_choice":
    choice_agreement(args.workdir, args.export, args.eval_file, args.questions)
  elif args.workdir:
    classification_agreement(args.workdir, args.export, args.eval_file, args.text_key)


if __name__ == "__main__":
  main()
