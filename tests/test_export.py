"""Every model out to Hugging Face with its tokenizer and head; HF fine-tuned BERTs in.

Parity is checked both ways against `transformers` in float32 (1e-5), through the models and
through `transformers.pipeline`, and the exported tokenizers against bert_jax's own ids.
"""

import contextlib
import csv
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import numpy as np
import pytest
import sentencepiece as spm

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

# pylint: disable=g-import-not-at-top,wrong-import-position
from bert_jax import errors
from bert_jax.finetuning import finetune
from bert_jax.finetuning.data import featurize
from bert_jax.finetuning.data import task_files
from bert_jax.interop import convert
from bert_jax.interop import export
from bert_jax.interop import hf_heads
from bert_jax.interop import hf_tokenizer
from bert_jax.model import modeling
from bert_jax.runtime import resume
from bert_jax.tokenizers import tokenization
from bert_jax.tokenizers import wordpiece
from conftest import synthetic_documents
from test_finetune import _config as finetune_config
from test_train import REPO

TOLERANCE = 1e-5
# Every dimension differs, so a wrong transpose or head split fails.
HF_CONFIG = dict(vocab_size=256, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=37, max_position_embeddings=64, type_vocab_size=2)
LABELS = ("bad", "good", "neutral")
TAGS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")
HF_CLASSES = {"classification": "BertForSequenceClassification",
              "regression": "BertForSequenceClassification",
              "token": "BertForTokenClassification", "span": "BertForQuestionAnswering",
              "multiple_choice": "BertForMultipleChoice"}
FAMILIES = list(HF_CLASSES)
NUM_LABELS = {"classification": 3, "regression": 1, "token": 5, "span": 2, "multiple_choice": 1}


def _as_choices(family, inputs):
  """Multiple choice reads [questions, choices, length]: the two rows as two choices of one."""
  return tuple(x[None] for x in inputs) if family == "multiple_choice" else inputs


def _hf_model(family: str):
  labels = {"classification": LABELS, "token": TAGS}.get(family)
  extra = {}
  if labels:
    extra = dict(id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
  if family == "regression":
    extra = dict(num_labels=1, problem_type="regression")
  torch.manual_seed(0)
  model = getattr(transformers, HF_CLASSES[family])(transformers.BertConfig(**HF_CONFIG, **extra))
  with torch.no_grad():
    for name, param in model.named_parameters():
      if "LayerNorm" in name or name.endswith("bias"):  # Not the init's 1 and 0: a swap shows.
        param.copy_(torch.randn_like(param) * 0.5 + (1.0 if name.endswith("weight") else 0.0))
  return model.eval()


def _inputs(batch=2, length=24, seed=0):
  rng = np.random.default_rng(seed)
  input_ids = rng.integers(5, HF_CONFIG["vocab_size"], (batch, length)).astype(np.int32)
  input_mask = np.ones((batch, length), np.int32)
  input_mask[1, length * 2 // 3:] = 0
  segment_ids = np.zeros((batch, length), np.int32)
  segment_ids[:, length // 3:] = 1
  return input_ids, segment_ids * input_mask, input_mask


def _hf_logits(model, input_ids, segment_ids, input_mask):
  with torch.no_grad():
    out = model(input_ids=torch.from_numpy(input_ids).long(),
                token_type_ids=torch.from_numpy(segment_ids).long(),
                attention_mask=torch.from_numpy(input_mask).long())
  if hasattr(out, "start_logits"):
    return np.stack([out.start_logits.numpy(), out.end_logits.numpy()], -1)
  return out.logits.numpy()


def _jax_logits(config, head, params, *inputs):
  out = hf_heads.model_for(config, head).apply({"params": params}, *inputs)
  return np.stack(out, -1) if isinstance(out, tuple) else np.asarray(out)


@pytest.mark.parametrize("family", FAMILIES)
def test_hf_fine_tuned_models_load_with_their_head(family, tmp_path):
  model = _hf_model(family)
  model.save_pretrained(tmp_path / "hf")
  config, params, report = convert.load_params(str(tmp_path / "hf"), return_report=True)
  labels = {"classification": LABELS, "token": TAGS}.get(family)
  assert report.head == hf_heads.Head(family, NUM_LABELS[family], labels)
  # HF builds token and span models without a pooler: ours is initialised, and unused.
  assert report.initialized == (["bert/pooler/bias", "bert/pooler/kernel"]
                                if family in ("token", "span") else [])
  inputs = _as_choices(family, _inputs())
  difference = np.max(np.abs(_jax_logits(config, report.head, params, *inputs) -
                             _hf_logits(model, *inputs)))
  assert difference < TOLERANCE, difference


def _export(family, sentencepiece_model, tmp_path):
  """A random bert_jax model with `family`'s head, exported to HF through an Orbax params dir
  holding its vocabulary."""
  config = modeling.BertConfig(**HF_CONFIG)
  labels = {"classification": LABELS, "token": TAGS}.get(family)
  head = hf_heads.Head(family, NUM_LABELS[family], labels)
  params = nn.meta.unbox(hf_heads.model_for(config, head).init(
      jax.random.key(1), *hf_heads.dummy_inputs(head))["params"])
  params = jax.tree.map(lambda x: np.asarray(x) + 0.02, params)  # No bias left at zero.
  orbax_dir, out = str(tmp_path / "orbax"), str(tmp_path / "hf")
  convert.save_orbax_params(orbax_dir, config, params, head)
  shutil.copy(sentencepiece_model, os.path.join(orbax_dir, "vocab.model"))
  done = export.export_hf(orbax_dir, out)
  assert done.report.head == head
  return config, head, params, out


@pytest.mark.parametrize("family", FAMILIES)
def test_exports_load_in_transformers_and_its_pipelines_agree(family, sentencepiece_model,
                                                              tmp_path):
  config, head, params, out = _export(family, sentencepiece_model, tmp_path)
  auto = {"classification": "AutoModelForSequenceClassification",
          "regression": "AutoModelForSequenceClassification",
          "token": "AutoModelForTokenClassification", "span": "AutoModelForQuestionAnswering",
          "multiple_choice": "AutoModelForMultipleChoice"}
  model = getattr(transformers, auto[family]).from_pretrained(out).eval()
  assert type(model).__name__ == HF_CLASSES[family]
  hf_tokenizer_ = transformers.AutoTokenizer.from_pretrained(out)
  tokenizer = tokenization.load_tokenizer(sentencepiece_model)
  # The same ids, pair layout and padding as bert_jax's own features.
  pairs = [("The model reads a sentence.", "Every layer has attention."),
           ("Some data is small.", "A test run is fast and every step is slow.")]
  ours = featurize.encode_text_examples(
      [task_files.TextExample(str(i), a, b, None) for i, (a, b) in enumerate(pairs)], tokenizer,
      24, "classification")
  theirs = hf_tokenizer_([a for a, _ in pairs], [b for _, b in pairs], padding="max_length",
                         max_length=24, return_tensors="np")
  np.testing.assert_array_equal(theirs["input_ids"], ours["input_ids"])
  np.testing.assert_array_equal(theirs["token_type_ids"], ours["segment_ids"])
  np.testing.assert_array_equal(theirs["attention_mask"], ours["input_mask"])
  inputs = _as_choices(family, (ours["input_ids"], ours["segment_ids"], ours["input_mask"]))
  logits = _jax_logits(config, head, params, *inputs)
  difference = np.max(np.abs(logits - _hf_logits(model, *inputs)))
  assert difference < TOLERANCE, difference
  if family == "multiple_choice":
    return  # transformers has no multiple-choice pipeline.
  if family == "span":  # transformers 5 has no question-answering pipeline: the README's code.
    _check_span_readme(config, head, params, out, hf_tokenizer_)
    return

  pipe_task = head.record.hf.pipeline
  pipe = transformers.pipeline(pipe_task, model=out, device="cpu")
  text = "The model reads a sentence"
  if family in ("classification", "regression"):
    single = featurize.encode_text_examples([task_files.TextExample("0", text, None, None)],
                                            tokenizer, 24, scores=family == "regression")
    logits = _jax_logits(config, head, params, single["input_ids"], single["segment_ids"],
                         single["input_mask"])[0]
    scores = {d["label"]: d["score"] for d in pipe(text, top_k=None)}
    if family == "regression":  # problem_type regression: the score is the output itself.
      assert abs(scores["LABEL_0"] - logits[0]) < TOLERANCE
    else:
      expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
      for label, p in zip(LABELS, expected):
        assert abs(scores[label] - p) < TOLERANCE
  elif family == "token":
    encoded = hf_tokenizer_(text, return_tensors="np")
    logits = _jax_logits(config, head, params, encoded["input_ids"],
                         encoded["token_type_ids"], encoded["attention_mask"])[0]
    tags = [TAGS[i] for i in np.argmax(logits, -1)[1:-1]]  # Without [CLS] and [SEP].
    entities = pipe(text, ignore_labels=[])
    assert [e["entity"] for e in entities] == tags


def _check_span_readme(config, head, params, out, hf_tokenizer_):
  """The export README's code runs as written and prints the span bert_jax's rule picks."""
  readme = open(os.path.join(out, "README.md")).read()
  code = textwrap.dedent("\n".join(line for line in readme.splitlines()
                                   if line.startswith("    ") or not line.strip()))
  printed = io.StringIO()
  with contextlib.redirect_stdout(printed):
    exec(code, {})  # pylint: disable=exec-used
  question, context = "Where did she work?", "Ada Lovelace worked in London."
  encoded = hf_tokenizer_(question, context, return_tensors="np", return_offsets_mapping=True)
  logits = _jax_logits(config, head, params, encoded["input_ids"], encoded["token_type_ids"],
                       encoded["attention_mask"])[0]  # [length, 2]
  offsets = encoded["offset_mapping"][0]
  context_tokens = np.flatnonzero((encoded["token_type_ids"][0] == 1) & (offsets[:, 1] > 0))
  start, end = max(((s, e) for s in context_tokens for e in context_tokens if 0 <= e - s < 30),
                   key=lambda span: logits[span[0], 0] + logits[span[1], 1])
  assert printed.getvalue() == context[offsets[start][0]:offsets[end][1]] + "\n"


def test_sentencepiece_tokenizer_json_gives_the_models_ids(sentencepiece_model, tmp_path):
  tokenizer = hf_tokenizer.sentencepiece_tokenizer(sentencepiece_model)
  processor = spm.SentencePieceProcessor(model_file=sentencepiece_model)
  texts = ([s for d in synthetic_documents(60, seed=3) for s in d] + list(hf_tokenizer.CHECK_TEXTS)
           + ["\u3000\u0301 combining after an ideographic space", "tab\there\nnew line"])
  for text in texts:
    assert tokenizer.encode(text, add_special_tokens=False).ids == processor.Encode(text), text
  # With special tokens, as a pair: [CLS] a [SEP] b [SEP], segments 0 then 1.
  pair = tokenizer.encode("a model", "the data")
  a, b = processor.Encode("a model"), processor.Encode("the data")
  assert pair.ids == [2, *a, 3, *b, 3]
  assert pair.type_ids == [0] * (len(a) + 2) + [1] * (len(b) + 1)
  # A repeated character can split two ways with exactly the same score; HF breaks such ties
  # the other way. Where ids differ at all, it is only ever such a tie.
  scores = [processor.GetScore(i) for i in range(processor.GetPieceSize())]
  for text in ["1111 2222 ==== ---- aaaa", "xxxxxxxx ........"]:
    ours = processor.Encode(text)
    theirs = tokenizer.encode(text, add_special_tokens=False).ids
    assert processor.Decode(theirs) == processor.Decode(ours)
    assert abs(sum(scores[i] for i in theirs) - sum(scores[i] for i in ours)) < 1e-4


@pytest.mark.parametrize("do_lower_case", [True, False])
def test_wordpiece_vocab_exports_with_its_casing(do_lower_case, tmp_path):
  words = sorted({w.lower() for d in synthetic_documents(20) for s in d for w in s[:-1].split()})
  words += [w.capitalize() for w in words[:30]] + ["##s", "##ing", ".", ",", "!", "cafe", "é"]
  vocab = tmp_path / "vocab.txt"
  vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words) + "\n")
  (tmp_path / "out").mkdir()
  hf_tokenizer.write(str(vocab), do_lower_case, str(tmp_path / "out"), 64)
  theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "out"))
  ours = wordpiece.FullTokenizer(str(vocab), do_lower_case=do_lower_case)
  for text in ["The model reads Data, fast!", "Café and CAFE: runs testing.", "a\tb  c"]:
    assert theirs(text, add_special_tokens=False)["input_ids"] == ours.encode(text), text


def test_pretrain_finetune_export_and_pipelines_match_bert_jax(review_classifier, tmp_path):
  """The user's path: pre-train, fine-tune, export both (the CLI), and transformers' pipelines
  give bert_jax's own eval predictions and MLM probabilities."""
  data_dir, pretrain_dir, workdir = review_classifier

  def run(*args):
    result = subprocess.run([sys.executable, "-m", "bert_jax.interop", *args, "--format=hf"],
                            capture_output=True, text=True, cwd=REPO, check=False,
                            env={**os.environ, "USE_TF": "0"})
    assert result.returncode == 0, result.stderr
    return result.stdout

  out = run(f"--input={workdir}", f"--output={tmp_path / 'cls_hf'}")
  assert "BertForSequenceClassification (bad, good)" in out
  rows = [json.loads(line) for line in open(os.path.join(workdir, "predictions", "step_3",
                                                         "validation.jsonl"))]
  texts = [r["review"] for r in csv.DictReader(open(data_dir / "dev.csv"))]
  pipe = transformers.pipeline("text-classification", model=str(tmp_path / "cls_hf"),
                               device="cpu")
  for row, scores in zip(rows, pipe(texts, top_k=None, truncation=True)):
    scores = {d["label"]: d["score"] for d in scores}
    assert max(scores, key=scores.get) == row["prediction"]
    for label, p in row["probabilities"].items():
      assert abs(scores[label] - p) < TOLERANCE

  run(f"--input={pretrain_dir}", f"--output={tmp_path / 'mlm_hf'}")
  fill = transformers.pipeline("fill-mask", model=str(tmp_path / "mlm_hf"), device="cpu")
  text = "The model reads a [MASK] of data."
  encoded = fill.tokenizer(text, return_tensors="np")
  position = int(np.flatnonzero(encoded["input_ids"][0] == 4)[0])  # [MASK]
  model_config, params = convert.load_params(pretrain_dir)
  mlm, _ = modeling.BertForPreTraining(model_config).apply(
      {"params": params}, encoded["input_ids"], encoded["token_type_ids"],
      encoded["attention_mask"], np.array([[position]], np.int32))
  logits = np.asarray(mlm)[0, 0]
  probabilities = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
  top = fill(text, top_k=5)
  np.testing.assert_allclose([t["score"] for t in top], np.sort(probabilities)[::-1][:5],
                             atol=TOLERANCE)
  assert [t["token"] for t in top] == list(np.argsort(-probabilities)[:5])


def test_an_hf_classifier_fine_tunes_further_from_its_head(sentencepiece_model, tmp_path, capsys):
  model = _hf_model("classification")
  hf_dir = tmp_path / "hf"
  model.save_pretrained(hf_dir)
  shutil.copy(sentencepiece_model, hf_dir / "vocab.model")
  texts = ["the model reads data", "a small test run", "every layer has a head"] * 4
  with open(tmp_path / "dev.csv", "w") as f:
    f.write("sentence,label\n" + "".join(f"{t},{LABELS[i % 3]}\n" for i, t in enumerate(texts)))
  config = finetune_config("classification", "", train_file=str(tmp_path / "dev.csv"),
                           eval_file=str(tmp_path / "dev.csv"), label_names=",".join(LABELS),
                           max_examples=0, max_seq_length=16)
  config.init_checkpoint = str(hf_dir)
  # One step at a learning rate that cannot move the weights: eval shows the HF model's own.
  config.train.update(num_train_steps=1, learning_rate=1e-12, warmup_proportion=0.0)
  workdir = str(tmp_path / "cls")
  finetune.finetune(config, workdir)
  assert ("The task head from the checkpoint: BertForSequenceClassification, 3 outputs "
          "(bad, good, neutral)") in capsys.readouterr().out
  rows = [json.loads(line) for line in open(os.path.join(workdir, "predictions", "step_1",
                                                         "validation.jsonl"))]
  ours = featurize.encode_text_examples(
      [task_files.TextExample(str(i), t, None, None) for i, t in enumerate(texts)],
      tokenization.load_tokenizer(sentencepiece_model), 16, "classification")
  logits = _hf_logits(model, ours["input_ids"], ours["segment_ids"], ours["input_mask"])
  expected = np.exp(logits - logits.max(-1, keepdims=True))
  expected /= expected.sum(-1, keepdims=True)
  for row, p in zip(rows, expected):
    assert row["prediction"] == LABELS[int(np.argmax(p))]
    np.testing.assert_allclose([row["probabilities"][n] for n in LABELS], p, atol=1e-5)


def test_export_mistakes_are_one_line_and_keep_what_was_there(sentencepiece_model, tmp_path):
  _, _, _, out = _export("classification", sentencepiece_model, tmp_path)
  before = {name: open(os.path.join(out, name), "rb").read() for name in os.listdir(out)}
  orbax_dir = str(tmp_path / "orbax")
  with pytest.raises(errors.UserError, match="exists and is not empty: pass --overwrite"):
    export.export_hf(orbax_dir, out)
  with pytest.raises(errors.UserError, match="--vocab_file=.*nowhere.model does not exist"):
    export.export_hf(orbax_dir, out, vocab_file=str(tmp_path / "nowhere.model"), overwrite=True)
  # A vocabulary that fails only once the weights are written (a BPE model does not export):
  # the old directory stays whole and no temporary is left.
  sentences = [s for d in synthetic_documents(40) for s in d]
  spm.SentencePieceTrainer.Train(
      sentence_iterator=iter(sentences), model_prefix=str(tmp_path / "bpe"), model_type="bpe",
      vocab_size=150, pad_id=0, pad_piece="[PAD]", unk_id=1, unk_piece="[UNK]", bos_id=-1,
      eos_id=-1, control_symbols=["[CLS]", "[SEP]", "[MASK]"], minloglevel=2)
  with pytest.raises(errors.UserError, match="not unigram"):
    export.export_hf(orbax_dir, out, vocab_file=str(tmp_path / "bpe.model"), overwrite=True)
  assert {n: open(os.path.join(out, n), "rb").read() for n in os.listdir(out)} == before
  assert sorted(os.listdir(tmp_path)) == ["bpe.model", "bpe.vocab", "hf", "orbax"]
  # Pre-training cannot continue from a fine-tuned model: it has no MLM/NSP heads.
  with pytest.raises(errors.UserError, match="is a fine-tuned model"):
    resume.initial_params(out, modeling.BertConfig(**HF_CONFIG), None)


def test_workdirs_saved_before_the_family_was_recorded_still_export():
  head = convert._workdir_head  # pylint: disable=protected-access
  assert head({"step": 3}, {"bert": {}, "cls": {}}) == hf_heads.Head()
  assert head({"task": "squad/v1.1", "label_names": None}, {"qa_outputs": {}}) == (
      hf_heads.Head("span", 2))
  assert head({"task": "stsb", "label_names": None}, {"classifier": {}}) == (
      hf_heads.Head("regression", 1))
  assert head({"task": "conll2003", "label_names": list(TAGS)}, {"classifier": {}}) == (
      hf_heads.Head("token", 5, TAGS))
  assert head({"task": "sst2", "label_names": ["negative", "positive"]}, {"classifier": {}}) == (
      hf_heads.Head("classification", 2, ("negative", "positive")))
