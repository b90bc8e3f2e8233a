"""Tests of bert_jax/finetuning/data/tasks.py and task_files.py: fine-tuning examples and features."""

import dataclasses
import json

import ml_collections
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from bert_jax import errors
from bert_jax.finetuning.data import featurize
from bert_jax.finetuning.data import tasks
from bert_jax.finetuning.families import registry
from bert_jax.tokenizers import tokenization

# TFDS datasets here come from tfds.testing.mock_data (conftest.tfds_mock_hosts).
pytestmark = pytest.mark.usefixtures("tfds_mock_hosts")

# A WordPiece vocabulary small enough to know every id by heart.
_VOCAB = ("[PAD] [UNK] [CLS] [SEP] [MASK] the cat sat on mat dog ran ##s jo ##hn lives in "
          "paris . new york").split()
ID = {token: i for i, token in enumerate(_VOCAB)}
PAD, UNK, CLS, SEP = ID["[PAD]"], ID["[UNK]"], ID["[CLS]"], ID["[SEP]"]


def data_config(**fields) -> ml_collections.ConfigDict:
  """config.data's fine-tuning fields, with their defaults."""
  config = ml_collections.ConfigDict({
      "tfds_data_dir": "", "train_file": "", "eval_file": "", "text_a_key": "",
      "text_b_key": "", "label_key": "", "label_names": "", "max_examples": 0})
  config.update(fields)
  return config


@pytest.fixture(name="wordpiece")
def fixture_wordpiece(tmp_path):
  vocab_file = tmp_path / "vocab.txt"
  vocab_file.write_text("\n".join(_VOCAB) + "\n")
  return tokenization.load_tokenizer(str(vocab_file), do_lower_case=True)


def write(path, text: str) -> str:
  path.write_text(text, encoding="utf-8")
  return str(path)


# --- the task registry ---


def test_registry_matches_tfds_builders():
  for task in tasks.TASKS.values():
    assert task.family in registry.FAMILIES
    assert set(task.metrics) <= set(tasks.METRICS)
  glue = {name for name, task in tasks.TASKS.items() if task.tfds_name.startswith("glue/")}
  assert glue == {"cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli"}
  assert tasks.get_task("cola").metrics == ("matthews_corrcoef",)
  assert tasks.get_task("stsb").metrics == ("pearson", "spearman")
  assert tasks.get_task("stsb").num_labels == 1
  assert tasks.get_task("mrpc").metrics == ("f1", "accuracy")
  assert tasks.get_task("mnli").eval_splits == ("validation_matched", "validation_mismatched")
  assert tasks.get_task("conll2003").metrics == ("entity_f1",)


@pytest.mark.parametrize("name", [name for name, task in tasks.TASKS.items() if task.tfds_name])
def test_task_features_and_labels_are_tfds(name):
  # The registry is written by hand; TFDS's builders (no data needed for their info) decide.
  task = tasks.get_task(name)
  with tfds.testing.mock_data(num_examples=1):
    features = tfds.builder(task.tfds_name).info.features
  for key in (*task.text_keys, task.label_key):
    assert key in features
  if task.family == "classification":
    assert tuple(features[task.label_key].names) == task.label_names
  elif task.family == "token":
    assert tuple(features[task.label_key].feature.names) == task.label_names


def test_unknown_task_lists_the_known_ones():
  with pytest.raises(errors.UserError, match="unknown task 'glue'.*sst2.*conll2003"):
    tasks.get_task("glue")


# --- TFDS ---


def test_sst2_from_tfds():
  with tfds.testing.mock_data(num_examples=5):
    examples, label_names = registry.load_examples(tasks.get_task("sst2"), "train", data_config())
  assert label_names == ("negative", "positive")
  assert len(examples) == 5
  assert all(isinstance(e.text_a, str) and e.text_b is None and e.label in (0, 1)
             for e in examples)
  assert [e.guid for e in examples] == [f"train-{i}" for i in range(5)]


def test_mnli_pairs_from_both_eval_splits():
  task = tasks.get_task("mnli")
  assert tasks.eval_split_names(task, data_config()) == task.eval_splits
  with tfds.testing.mock_data(num_examples=3):
    for split in task.eval_splits:
      examples, label_names = registry.load_examples(task, split, data_config(max_examples=2))
      assert label_names == ("entailment", "neutral", "contradiction")
      assert len(examples) == 2
      assert all(isinstance(e.text_b, str) and e.label in (0, 1, 2) for e in examples)


def test_stsb_regression_floats():
  with tfds.testing.mock_data(num_examples=4):
    examples, label_names = registry.load_examples(tasks.get_task("stsb"), "validation",
                                                data_config())
  assert label_names is None
  assert all(isinstance(e.label, float) and isinstance(e.text_b, str) for e in examples)


def _as_dataset_fn(rows, signature):
  def as_dataset(self, split, **kwargs):
    del self, split, kwargs
    return tf.data.Dataset.from_generator(lambda: iter(rows), output_signature=signature)
  return as_dataset


def test_conll2003_from_tfds():
  rows = [{"tokens": ["EU", "rejects", "German", "call"], "ner": [3, 0, 7, 0]},
          {"tokens": ["Peter", "Blackburn"], "ner": [1, 2]}]
  signature = {"tokens": tf.TensorSpec([None], tf.string),
               "ner": tf.TensorSpec([None], tf.int64)}
  with tfds.testing.mock_data(as_dataset_fn=_as_dataset_fn(rows, signature)):
    examples, label_names = registry.load_examples(tasks.get_task("conll2003"), "dev",
                                                data_config())
  assert label_names == tasks.CONLL2003_TAGS
  assert examples == [tasks.TokenExample("dev-0", ["EU", "rejects", "German", "call"],
                                         [3, 0, 7, 0]),
                      tasks.TokenExample("dev-1", ["Peter", "Blackburn"], [1, 2])]


def test_conll2003_from_plain_mock_data():
  with tfds.testing.mock_data(num_examples=3):
    examples, _ = registry.load_examples(tasks.get_task("conll2003"), "train", data_config())
  assert len(examples) == 3
  assert all(len(e.words) == len(e.labels) and set(e.labels) <= set(range(9)) for e in examples)


def test_glue_test_split_has_no_labels():
  signature = {"sentence": tf.TensorSpec([], tf.string), "label": tf.TensorSpec([], tf.int64),
               "idx": tf.TensorSpec([], tf.int32)}
  rows = [{"sentence": "a", "label": -1, "idx": 0}]
  with tfds.testing.mock_data(as_dataset_fn=_as_dataset_fn(rows, signature)):
    with pytest.raises(errors.UserError, match="'test' of glue/sst2 has no labels"):
      registry.load_examples(tasks.get_task("sst2"), "test", data_config())


def test_missing_tfds_dataset_without_network(tmp_path, monkeypatch):
  def no_network(self, *args, **kwargs):
    raise ConnectionError("Failed to resolve 'dl.fbaipublicfiles.com'\nmore detail")
  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_network)
  config = data_config(tfds_data_dir=str(tmp_path))
  with pytest.raises(errors.UserError) as raised:
    registry.load_examples(tasks.get_task("rte"), "train", config)
  message = str(raised.value)
  assert "'glue/rte' is not prepared in" in message and "ConnectionError" in message
  assert "\n" not in message
  unknown = dataclasses.replace(tasks.get_task("rte"), tfds_name="no_such_dataset")
  with pytest.raises(errors.UserError, match="TFDS has no dataset 'no_such_dataset'"):
    registry.load_examples(unknown, "train", config)


# --- local files ---


def test_csv_tsv_jsonl_classification_with_custom_columns(tmp_path):
  csv_file = write(tmp_path / "train.csv",
                   'review,stars,sentiment\n"good, really",5,pos\nbad,1,neg\nmeh,3,neutral\n')
  write(tmp_path / "more.tsv", 'review\tsentiment\n"quoted\tpos\n')
  jsonl_file = write(tmp_path / "eval.jsonl",
                     json.dumps({"review": "fine", "sentiment": "pos"}) + "\n\n" +
                     json.dumps({"review": "awful", "sentiment": "neg"}) + "\n")
  config = data_config(train_file=f"{csv_file},{tmp_path}/*.tsv", eval_file=jsonl_file,
                       text_a_key="review", label_key="sentiment")
  task = tasks.get_task("classification")
  examples, label_names = registry.load_examples(task, "train", config)
  assert label_names == ("neg", "neutral", "pos")  # Sorted, as found in the train files.
  assert [(e.text_a, e.text_b, e.label) for e in examples] == [
      ("good, really", None, 2), ("bad", None, 0), ("meh", None, 1), ('"quoted', None, 2)]
  # The eval file has no 'neutral': ids still come from the train labels, passed or not.
  for names in (label_names, None):
    eval_examples, eval_names = registry.load_examples(task, "validation", config, names)
    assert eval_names == label_names
    assert [(e.guid, e.text_a, e.label) for e in eval_examples] == [
        ("validation-0", "fine", 2), ("validation-1", "awful", 0)]
  assert tasks.eval_split_names(tasks.get_task("mnli"), config) == ("validation_matched",)


def test_local_pair_with_label_names_and_max_examples(tmp_path):
  train_file = write(tmp_path / "pairs.tsv", "q1\tq2\tsame\na\tb\tyes\nc\td\tno\ne\tf\tyes\n")
  config = data_config(train_file=train_file, text_a_key="q1", text_b_key="q2",
                       label_key="same", label_names="no, yes", max_examples=2)
  examples, label_names = registry.load_examples(tasks.get_task("classification"), "train", config)
  assert label_names == ("no", "yes")
  assert [(e.text_a, e.text_b, e.label) for e in examples] == [("a", "b", 1), ("c", "d", 0)]


def test_glue_task_from_its_own_tsv_with_integer_labels(tmp_path):
  train_file = write(tmp_path / "train.tsv", "sentence\tlabel\nnice\t1\nugly\t0\n")
  examples, label_names = registry.load_examples(tasks.get_task("sst2"), "train",
                                              data_config(train_file=train_file))
  assert label_names == ("negative", "positive")
  assert [e.label for e in examples] == [1, 0]


def test_local_regression(tmp_path):
  train_file = write(tmp_path / "scores.jsonl",
                     '{"sentence1": "a", "sentence2": "b", "score": 4.5}\n'
                     '{"sentence1": "c", "sentence2": "d", "score": "2"}\n')
  config = data_config(train_file=train_file, text_a_key="sentence1", text_b_key="sentence2",
                       label_key="score")
  examples, label_names = registry.load_examples(tasks.get_task("regression"), "train", config)
  assert label_names is None
  assert [(e.text_a, e.text_b, e.label) for e in examples] == [("a", "b", 4.5), ("c", "d", 2.0)]
  bad_file = write(tmp_path / "bad.csv", "sentence,label\nok,1.5\nnot ok,high\n")
  with pytest.raises(errors.UserError, match=r"bad.csv:3: column 'label'.*'high'.*number"):
    registry.load_examples(tasks.get_task("regression"), "train", data_config(train_file=bad_file))


def test_local_ner_jsonl_and_conll(tmp_path):
  jsonl_file = write(tmp_path / "train.jsonl",
                     json.dumps({"words": ["John", "lives"], "tags": ["B-PER", "O"]}) + "\n")
  conll_file = write(tmp_path / "eval.txt",
                     "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n"
                     "Paris\tB-LOC\n")
  config = data_config(train_file=jsonl_file, eval_file=conll_file, text_a_key="words",
                       label_key="tags", label_names="O,B-PER,I-PER,B-ORG,I-ORG,B-LOC,I-LOC")
  task = tasks.get_task("ner")
  examples, label_names = registry.load_examples(task, "train", config)
  assert label_names[0] == "O"
  assert examples == [tasks.TokenExample("train-0", ["John", "lives"], [1, 0])]
  examples, _ = registry.load_examples(task, "validation", config)
  assert examples == [tasks.TokenExample("validation-0", ["EU", "rejects"], [3, 0]),
                      tasks.TokenExample("validation-1", ["Paris"], [5])]
  # Without data.label_names: the tags of the train file, 'O' first, then sorted.
  examples, label_names = registry.load_examples(task, "train", data_config(train_file=conll_file))
  assert label_names == ("O", "B-LOC", "B-ORG")
  assert [e.labels for e in examples] == [[2, 0], [1]]
  with pytest.raises(errors.UserError, match="must have the tag 'O' first"):
    registry.load_examples(task, "train", data_config(train_file=conll_file,
                                                    label_names="B-LOC,B-ORG,O"))


@pytest.mark.parametrize("file_name, text, fields, message", [
    ("a.csv", "text,label\nx,pos\n", {}, r"a.csv:2: no column 'sentence' \(columns: text, label\)"),
    ("a.tsv", "sentence\tlabel\nx\n", {}, r"a.tsv:2: no value for column 'label': the row has 1 of"),
    ("a.jsonl", '{"sentence": "x", "label": "pos"}\n{"sentence": "y"}\n', {},
     r"a.jsonl:2: no column 'label'"),
    ("a.csv", "sentence,label\nx,pos\ny,maybe\n", {"label_names": "neg,pos"},
     r"a.csv:3: column 'label': label 'maybe' is not one of \['neg', 'pos'\]"),
    ("a.jsonl", '{"sentence": "x", "label": "pos"}\nnot json\n', {}, r"a.jsonl:2: not JSON"),
    ("a.xlsx", "", {}, r"a.xlsx: unknown format '.xlsx'"),
])
def test_bad_rows_name_file_line_and_column(tmp_path, file_name, text, fields, message):
  config = data_config(train_file=write(tmp_path / file_name, text), **fields)
  with pytest.raises(errors.UserError, match=message):
    registry.load_examples(tasks.get_task("classification"), "train", config)


def test_missing_files_and_fields(tmp_path):
  task = tasks.get_task("classification")
  with pytest.raises(errors.UserError, match="data.train_file: no file matches"):
    registry.load_examples(task, "train", data_config(train_file=str(tmp_path / "none.csv")))
  with pytest.raises(errors.UserError, match="set data.eval_file"):
    registry.load_examples(task, "validation", data_config())
  with pytest.raises(errors.UserError, match="data.max_examples must be >= 0"):
    registry.load_examples(task, "train", data_config(max_examples=-1))
  no_outside = write(tmp_path / "ner.txt", "EU B-ORG\n")
  with pytest.raises(errors.UserError, match="must have the tag 'O' first"):
    registry.load_examples(tasks.get_task("ner"), "train", data_config(train_file=no_outside))
  uneven = write(tmp_path / "ner.jsonl", '{"tokens": ["a", "b"], "ner": ["O"]}\n')
  with pytest.raises(errors.UserError, match=r"ner.jsonl:1: column 'ner' must be a list of 2"):
    registry.load_examples(tasks.get_task("ner"), "train", data_config(train_file=uneven))


# --- features ---


def test_encode_pair_exact_ids(wordpiece):
  examples = [tasks.TextExample("x-0", "The cat sat", "Dogs ran.", 1),
              tasks.TextExample("x-1", "the mat", None, 0)]
  features = featurize.encode_text_examples(examples, wordpiece, 12)
  the, cat, sat, dog, s, ran, dot, mat = (ID[t] for t in "the cat sat dog ##s ran . mat".split())
  np.testing.assert_array_equal(features["input_ids"], [
      [CLS, the, cat, sat, SEP, dog, s, ran, dot, SEP, PAD, PAD],
      [CLS, the, mat, SEP, PAD, PAD, PAD, PAD, PAD, PAD, PAD, PAD]])
  np.testing.assert_array_equal(features["input_mask"], [[1] * 10 + [0] * 2, [1] * 4 + [0] * 8])
  np.testing.assert_array_equal(features["segment_ids"],
                                [[0] * 5 + [1] * 5 + [0] * 2, [0] * 12])
  np.testing.assert_array_equal(features["label_ids"], [1, 0])
  assert {name: array.dtype for name, array in features.items()} == {
      "input_ids": np.int32, "input_mask": np.int32, "segment_ids": np.int32,
      "label_ids": np.int32}
  regression = featurize.encode_text_examples([tasks.TextExample("r", "the", None, 2.5)],
                                          wordpiece, 4, scores=True)
  assert regression["label_ids"].dtype == np.float32 and regression["label_ids"][0] == 2.5


def test_longest_first_truncation(wordpiece):
  the, cat, sat, dog, s = (ID[t] for t in "the cat sat dog ##s".split())
  # a: 6 tokens, b: 3, room for 5: a loses 3 (down to b's length), then b loses 1.
  pair = tasks.TextExample("p", "the cat sat on the mat", "dogs ran", 0)
  single = tasks.TextExample("s", "the cat sat on the mat", None, 0)
  features = featurize.encode_text_examples([pair, single], wordpiece, 8)
  np.testing.assert_array_equal(features["input_ids"], [
      [CLS, the, cat, sat, SEP, dog, s, SEP],
      [CLS, the, cat, sat, ID["on"], the, ID["mat"], SEP]])
  np.testing.assert_array_equal(features["segment_ids"][0], [0, 0, 0, 0, 0, 1, 1, 1])
  a, b = [1, 2, 3], [4, 5, 6, 7, 8]
  featurize.truncate_seq_pair(a, b, 4)
  assert (a, b) == ([1, 2], [4, 5])


def test_ner_first_sub_token_labels_and_truncated_words(wordpiece):
  # 'John' is two pieces; '\x00' tokenizes to nothing and stands as one [UNK].
  example = tasks.TokenExample("n", ["John", "lives", "in", "New", "York", "\x00"],
                               [1, 0, 0, 5, 6, 0])
  features = featurize.encode_token_examples([example], wordpiece, 12)
  np.testing.assert_array_equal(features["input_ids"][0], [
      CLS, ID["jo"], ID["##hn"], ID["lives"], ID["in"], ID["new"], ID["york"], UNK, SEP,
      PAD, PAD, PAD])
  np.testing.assert_array_equal(features["label_ids"][0], [0, 1, 0, 0, 0, 5, 6, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(features["label_weights"][0],
                                [0, 1, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0])
  np.testing.assert_array_equal(features["input_mask"][0], [1] * 9 + [0] * 3)
  assert features["label_weights"].dtype == np.float32 and features["label_ids"].dtype == np.int32
  # Predictions come back one per word, read off the first sub-tokens.
  predictions = np.arange(12)[None] + 10
  assert featurize.decode_token_predictions(features, predictions) == [
      [11, 13, 14, 15, 16, 17]]

  # Room for 4 pieces: John (2), lives, in; New and York and the [UNK] word are cut off.
  short = featurize.encode_token_examples([example], wordpiece, 6)
  np.testing.assert_array_equal(short["input_ids"][0],
                                [CLS, ID["jo"], ID["##hn"], ID["lives"], ID["in"], SEP])
  np.testing.assert_array_equal(short["label_weights"][0], [0, 1, 0, 1, 1, 0])
  assert short["num_words"][0] == 6
  assert tasks.OUTSIDE_ID == 0
  assert featurize.decode_token_predictions(short, np.full((1, 6), 7)) == [[7, 7, 7, 0, 0, 0]]


def test_encode_with_sentencepiece(tokenizer):
  examples = [tasks.TextExample("s", "The model reads data.", "Every batch has a mask.", 1)]
  features = featurize.encode_text_examples(examples, tokenizer, 32)
  ids_a, ids_b = tokenizer.encode("The model reads data."), tokenizer.encode(
      "Every batch has a mask.")
  expected = [tokenizer.cls_id, *ids_a, tokenizer.sep_id, *ids_b, tokenizer.sep_id]
  np.testing.assert_array_equal(features["input_ids"][0, :len(expected)], expected)
  assert features["segment_ids"][0].sum() == len(ids_b) + 1
  words = ["The", "model", "reads"]
  token_features = featurize.encode_token_examples([tasks.TokenExample("t", words, [0, 1, 0])],
                                               tokenizer, 16)
  starts = np.flatnonzero(token_features["label_weights"][0])
  first_pieces = [tokenizer.encode(word)[0] for word in words]
  np.testing.assert_array_equal(token_features["input_ids"][0, starts], first_pieces)
  np.testing.assert_array_equal(token_features["label_ids"][0, starts], [0, 1, 0])
