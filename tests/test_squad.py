"""SQuAD examples, windowed features and postprocessing (bert_jax/finetuning/data/squad*.py)."""

import json

import numpy as np
import pytest

from bert_jax import errors
from bert_jax.finetuning.data import squad
from bert_jax.finetuning.data import squad_postprocess
from bert_jax.finetuning.data import squad_windows
from bert_jax.tokenizers import special_tokens
from bert_jax.tokenizers import tokenization
from bert_jax.tokenizers import wordpiece

# TFDS datasets here come from tfds.testing.mock_data (conftest.tfds_mock_hosts).
pytestmark = pytest.mark.usefixtures("tfds_mock_hosts")

_NUMBERED_WORDS = [f"w{i}" for i in range(40)]
_VOCAB = (list(special_tokens.SPECIAL_TOKENS) + _NUMBERED_WORDS +
          "who what when was born nikola tesla lab burned lived fine in the ' s ( ) . - ? , "
          "1895 1943 ##s".split())


@pytest.fixture(scope="module")
def wordpiece_tokenizer(tmp_path_factory) -> wordpiece.FullTokenizer:
  vocab_file = tmp_path_factory.mktemp("vocab") / "vocab.txt"
  vocab_file.write_text("\n".join(_VOCAB) + "\n")
  return tokenization.load_tokenizer(str(vocab_file), do_lower_case=True)


def _example(context: str, answer: str | None = None, question: str = "who w1 ?",
             qas_id: str = "q0") -> squad.SquadExample:
  """An example built the way the readers build one: from the answer's char offset."""
  words, char_to_word = squad.split_into_words(context)
  answers = []
  if answer is not None:
    answers = [(answer, context.index(answer))]
  example = squad._make_example(qas_id, question, words, char_to_word, answers,
                                is_impossible=answer is None, is_training=True)
  assert example is not None
  return example


def test_split_into_words_maps_characters_to_words():
  context = "  Nikola  Tesla\n(1895)\t\tborn \u202fin\u00a0Smiljan "
  words, char_to_word = squad.split_into_words(context)
  assert words == ["Nikola", "Tesla", "(1895)", "born", "in\u00a0Smiljan"]
  assert len(char_to_word) == len(context)
  assert char_to_word[:2] == [-1, -1]  # Leading spaces: before any word.
  assert char_to_word[context.index("Tesla")] == 1
  assert char_to_word[context.index("Tesla") - 1] == 0  # A space belongs to the word before.
  assert char_to_word[context.index("1895")] == 2
  assert char_to_word[context.index("born") + 3] == 3
  assert char_to_word[context.index("Smiljan")] == 4
  example = _example(context, "1895")
  assert (example.start_position, example.end_position) == (2, 2)
  example = _example(context, "Tesla\n(1895)")
  assert (example.start_position, example.end_position) == (1, 2)


def test_windows_hold_the_answer_where_it_fits(wordpiece_tokenizer):
  example = _example(" ".join(_NUMBERED_WORDS[:30]), "w12 w13")
  # 16 - 3 query tokens - 3 specials = 10 doc tokens per window, starts 4 apart.
  features = squad_windows.convert_examples_to_features([example], wordpiece_tokenizer,
                                                max_seq_length=16, doc_stride=4,
                                                max_query_length=8, is_training=True)
  assert len(features) == 6
  assert features.input_ids.shape == (6, 16) and features.input_ids.dtype == np.int32
  assert features.unique_ids.dtype == np.int64
  assert features.example_index.tolist() == [0] * 6
  windows_with_answer = []
  for i in range(len(features)):
    tokens = features.tokens[i]
    assert tokens[:5] == ["[CLS]", "who", "w1", "?", "[SEP]"] and tokens[-1] == "[SEP]"
    first_doc_word = features.token_to_orig_map[i][5]
    assert first_doc_word == 4 * i
    start, end = features.start_positions[i], features.end_positions[i]
    if start:
      windows_with_answer.append(i)
      assert tokens[start:end + 1] == ["w12", "w13"]
      assert [features.token_to_orig_map[i][p] for p in (start, end)] == [12, 13]
    else:
      assert end == 0
  assert windows_with_answer == [1, 2, 3]  # Doc tokens 4-13, 8-17, 12-21.
  np.testing.assert_array_equal(
      features.input_ids[0], wordpiece_tokenizer.convert_tokens_to_ids(features.tokens[0]))
  np.testing.assert_array_equal(features.segment_ids[0], [0] * 5 + [1] * 11)
  np.testing.assert_array_equal(features.input_mask[0], [1] * 16)
  # The last window is short: padded.
  assert features.input_mask[5].sum() == 16
  assert features.tokens[5][5:-1] == _NUMBERED_WORDS[20:30]


def test_max_context_picks_one_window_per_token(wordpiece_tokenizer):
  example = _example(" ".join(_NUMBERED_WORDS[:30]), "w12")
  features = squad_windows.convert_examples_to_features([example], wordpiece_tokenizer,
                                                max_seq_length=16, doc_stride=4,
                                                max_query_length=8, is_training=False)
  windows_of_word = {}
  for i in range(len(features)):
    for position, is_max in features.token_is_max_context[i].items():
      if is_max:
        windows_of_word.setdefault(features.token_to_orig_map[i][position], []).append(i)
  assert sorted(windows_of_word) == list(range(30))
  assert all(len(windows) == 1 for windows in windows_of_word.values())
  # w12 is in windows 1 (4 left, 1 right... of 4-13), 2 (8-17) and 3 (12-21): most context in 2.
  assert windows_of_word[12] == [2]
  assert windows_of_word[0] == [0] and windows_of_word[29] == [5]
  # Not for training: no positions.
  assert not features.start_positions.any() and not features.end_positions.any()


@pytest.mark.parametrize("num_doc_tokens,max_tokens_for_doc,doc_stride",
                         [(1, 5, 2), (37, 10, 3), (37, 10, 10), (50, 16, 7)])
def test_max_context_matches_its_definition(num_doc_tokens, max_tokens_for_doc, doc_stride):
  windows = squad_windows._doc_windows(num_doc_tokens, max_tokens_for_doc, doc_stride)
  assert windows[0][0] == 0 and sum(windows[-1]) == num_doc_tokens
  best_window = squad_windows._max_context_windows(windows, num_doc_tokens)
  for position in range(num_doc_tokens):
    scores = [(min(position - start, start + length - 1 - position) + 0.01 * length, -index)
              for index, (start, length) in enumerate(windows)
              if start <= position < start + length]
    assert best_window[position] == -max(scores)[1]


def test_query_is_truncated(wordpiece_tokenizer):
  example = _example("w5 w6 w7", "w6", question="who was w1 w2 w3 ?")
  features = squad_windows.convert_examples_to_features([example], wordpiece_tokenizer,
                                                max_seq_length=12, max_query_length=2,
                                                is_training=True)
  assert features.tokens[0] == ["[CLS]", "who", "was", "[SEP]", "w5", "w6", "w7", "[SEP]"]
  assert (features.start_positions[0], features.end_positions[0]) == (5, 5)
  np.testing.assert_array_equal(features.segment_ids[0], [0] * 4 + [1] * 4 + [0] * 4)
  np.testing.assert_array_equal(features.input_mask[0], [1] * 8 + [0] * 4)
  assert features.input_ids[0, 8:].tolist() == [wordpiece_tokenizer.pad_id] * 4
  with pytest.raises(errors.UserError, match="max_query_length"):
    squad_windows.convert_examples_to_features([example], wordpiece_tokenizer, max_seq_length=10,
                                       max_query_length=7, is_training=True)


def test_answer_span_is_narrowed_to_the_answer_tokens(wordpiece_tokenizer):
  example = _example("Tesla lived (1895-1943). Fine.", "1895")
  assert example.doc_tokens[example.start_position] == "(1895-1943)."
  features = squad_windows.convert_examples_to_features([example], wordpiece_tokenizer,
                                                is_training=True)
  start, end = features.start_positions[0], features.end_positions[0]
  assert features.tokens[0][start:end + 1] == ["1895"]
  # An answer that is the whole word keeps the whole word.
  example = _example("Tesla lived (1895-1943). Fine.", "(1895-1943).")
  features = squad_windows.convert_examples_to_features([example], wordpiece_tokenizer,
                                                is_training=True)
  start, end = features.start_positions[0], features.end_positions[0]
  assert features.tokens[0][start:end + 1] == ["(", "1895", "-", "1943", ")", "."]


def test_impossible_questions_point_at_cls(wordpiece_tokenizer):
  example = _example("w1 w2 w3", None)
  assert example.is_impossible and example.answers == []
  features = squad_windows.convert_examples_to_features([example], wordpiece_tokenizer,
                                                is_training=True)
  assert (features.start_positions[0], features.end_positions[0]) == (0, 0)


def _logits(features: squad.SquadFeatures, spans: dict[int, list[tuple[int, int, float]]],
            null: dict[int, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Logits -10 everywhere but the given (start, end, score) spans and null scores."""
  start_logits = np.full(features.input_ids.shape, -10.0, np.float32)
  end_logits = np.full(features.input_ids.shape, -10.0, np.float32)
  for feature_index, feature_spans in spans.items():
    for start, end, score in feature_spans:
      start_logits[feature_index, start] = score / 2
      end_logits[feature_index, end] = score / 2
  for feature_index, score in (null or {}).items():
    start_logits[feature_index, 0] = end_logits[feature_index, 0] = score / 2
  return start_logits, end_logits


def _position(features: squad.SquadFeatures, feature_index: int, token: str) -> int:
  """Position of the first doc token `token` in a feature."""
  return next(i for i, t in enumerate(features.tokens[feature_index])
              if t == token and i in features.token_to_orig_map[feature_index])


def test_postprocess_restores_the_context_text(wordpiece_tokenizer):
  context = "Nikola  Tesla's lab (1895) burned."
  example = _example(context, "Tesla's", question="who was born ?")
  features = squad_windows.convert_examples_to_features([example], wordpiece_tokenizer,
                                                is_training=False)
  position = lambda token: _position(features, 0, token)

  def predict(*spans, **kwargs):
    start_logits, end_logits = _logits(features, {0: list(spans)})
    return squad_postprocess.postprocess([example], features, start_logits, end_logits, **kwargs)

  predictions, nbest, _ = predict((position("tesla"), position("s"), 5.0))
  assert predictions == {"q0": "Tesla's"}
  assert abs(sum(entry["probability"] for entry in nbest["q0"]) - 1.0) < 1e-6
  assert nbest["q0"][0]["text"] == "Tesla's" and len(nbest["q0"]) <= 20
  assert set(nbest["q0"][0]) == {"text", "probability", "start_logit", "end_logit"}
  assert predict((position("tesla"), position("tesla"), 5.0))[0]["q0"] == "Tesla"
  assert predict((position("1895"), position("1895"), 5.0))[0]["q0"] == "1895"
  assert predict((position("("), position(")"), 5.0))[0]["q0"] == "(1895)"
  assert predict((position("burned"), position("."), 5.0))[0]["q0"] == "burned."
  # The best valid span wins over higher-scoring invalid ones: a start in the query, an end
  # before the start, a span longer than max_answer_length.
  def predict_from(starts, ends, **kwargs):
    start_logits, end_logits = _logits(features, {})
    for logits, scores in ((start_logits, starts), (end_logits, ends)):
      for token, score in scores.items():
        logits[0, position(token) if isinstance(token, str) else token] = score
    return squad_postprocess.postprocess([example], features, start_logits, end_logits, **kwargs)

  assert predict_from({1: 10.0, "lab": 1.0}, {"lab": 10.0})[0]["q0"] == "lab"
  assert predict_from({"burned": 10.0, "lab": 1.0}, {"lab": 10.0})[0]["q0"] == "lab"
  predictions, nbest, _ = predict_from({"nikola": 10.0, "lab": 1.0}, {"burned": 10.0},
                                       max_answer_length=5)
  assert predictions["q0"] == "lab (1895) burned"
  # The words are joined by single spaces, as the original does.
  assert "Nikola Tesla's lab (1895) burned" not in [entry["text"] for entry in nbest["q0"]]
  assert predict_from({"nikola": 10.0, "lab": 1.0}, {"burned": 10.0},
                      max_answer_length=9)[0]["q0"] == "Nikola Tesla's lab (1895) burned"
  # n_best_size caps the candidates of each window and the entries kept.
  nbest = predict((position("tesla"), position("s"), 5.0), (position("lab"), position("lab"), 3.0),
                  (position("1895"), position("1895"), 4.0), n_best_size=2)[1]["q0"]
  assert [entry["text"] for entry in nbest] == ["Tesla's", "Tesla's lab (1895"]


def test_padding_takes_no_n_best_place(wordpiece_tokenizer):
  """Packed rows give padding zeros, unpacked ones whatever the head makes of [PAD]: neither
  may push a real span out of the n-best."""
  example = _example("Nikola Tesla's lab burned.", "lab", question="who ?")
  features = squad_windows.convert_examples_to_features([example], wordpiece_tokenizer,
                                                        max_seq_length=32, max_query_length=8,
                                                        is_training=False)
  num_tokens = len(features.tokens[0])
  assert num_tokens < 32  # The window has padding.
  start_logits, end_logits = _logits(features, {0: [(_position(features, 0, "lab"),
                                                     _position(features, 0, "lab"), 4.0)]})
  outputs = []
  for padding_logit in (50.0, 0.0):
    start_logits[0, num_tokens:] = end_logits[0, num_tokens:] = padding_logit
    outputs.append(squad_postprocess.postprocess([example], features, start_logits, end_logits,
                                                 n_best_size=2))
  assert outputs[0][0] == {"q0": "lab"}
  assert outputs[0] == outputs[1]


def test_postprocess_uses_the_window_with_most_context(wordpiece_tokenizer):
  example = _example(" ".join(_NUMBERED_WORDS[:30]), "w12")
  features = squad_windows.convert_examples_to_features([example], wordpiece_tokenizer,
                                                max_seq_length=16, doc_stride=4,
                                                max_query_length=8, is_training=False)
  # w12 scores highest in window 1, where it is not max-context; window 2's w13 is next.
  start_logits, end_logits = _logits(features, {
      1: [(_position(features, 1, "w12"), _position(features, 1, "w12"), 9.0)],
      2: [(_position(features, 2, "w13"), _position(features, 2, "w13"), 5.0)]})
  predictions, nbest, _ = squad_postprocess.postprocess([example], features, start_logits,
                                                       end_logits)
  assert predictions["q0"] == "w13"
  assert abs(sum(entry["probability"] for entry in nbest["q0"]) - 1.0) < 1e-6
  # The same start in the window that gives it the most context is taken.
  start_logits, end_logits = _logits(features, {
      2: [(_position(features, 2, "w12"), _position(features, 2, "w13"), 9.0)]})
  assert squad_postprocess.postprocess([example], features, start_logits,
                           end_logits)[0]["q0"] == "w12 w13"


def test_postprocess_v2_null_answer(wordpiece_tokenizer):
  examples = [_example("w1 w2 w3 w4", None, qas_id="impossible"),
              _example("w5 w6 w7", "w6", qas_id="answered")]
  features = squad_windows.convert_examples_to_features(examples, wordpiece_tokenizer,
                                                max_seq_length=16, max_query_length=8,
                                                is_training=False)
  start_logits, end_logits = _logits(features, {
      0: [(_position(features, 0, "w2"), _position(features, 0, "w3"), 4.0)],
      1: [(_position(features, 1, "w6"), _position(features, 1, "w6"), 6.0)]},
      null={0: 7.0, 1: 5.0})
  predictions, nbest, null_score_diffs = squad_postprocess.postprocess(
      examples, features, start_logits, end_logits, version_2_with_negative=True)
  assert predictions == {"impossible": "", "answered": "w6"}
  assert null_score_diffs["impossible"] == pytest.approx(3.0)
  assert null_score_diffs["answered"] == pytest.approx(-1.0)
  assert "" in [entry["text"] for entry in nbest["answered"]]
  assert abs(sum(entry["probability"] for entry in nbest["answered"]) - 1.0) < 1e-6
  # Null must win by more than the threshold.
  predictions, _, _ = squad_postprocess.postprocess(examples, features, start_logits, end_logits,
                                        version_2_with_negative=True,
                                        null_score_diff_threshold=3.5)
  assert predictions == {"impossible": "w2 w3", "answered": "w6"}
  # v1 never predicts "" while a span is valid.
  predictions, _, _ = squad_postprocess.postprocess(examples, features, start_logits, end_logits)
  assert predictions == {"impossible": "w2 w3", "answered": "w6"}


def test_sentencepiece_features_and_postprocess(tokenizer):
  context = "The Model will train on every batch. Data is  random!"
  example = _example(context, "every batch", question="What will the model train on?")
  features = squad_windows.convert_examples_to_features([example], tokenizer, max_seq_length=24,
                                                doc_stride=3, max_query_length=12,
                                                is_training=True)
  assert len(features) > 1
  assert features.input_ids[0, 0] == tokenizer.cls_id
  windows_with_answer = np.flatnonzero(features.start_positions)
  assert len(windows_with_answer)
  for i in windows_with_answer:
    start, end = features.start_positions[i], features.end_positions[i]
    pieces = features.tokens[i][start:end + 1]
    assert "".join(pieces).replace("\u2581", " ").strip() == "every batch"
  # Predict "batch" (without the '.' that shares its word), from the window where it has the
  # most context.
  for i in windows_with_answer:
    end = features.end_positions[i]
    batch_start = next(p for p in range(features.start_positions[i], end + 1)
                       if features.tokens[i][p].startswith("\u2581b"))
    if features.token_is_max_context[i][batch_start]:
      break
  start_logits, end_logits = _logits(features, {i: [(batch_start, end, 8.0)]})
  predictions, _, _ = squad_postprocess.postprocess([example], features, start_logits, end_logits,
                                        tokenizer=tokenizer)
  assert predictions["q0"] == "batch"
  assert squad_postprocess.get_final_text("model", "Model", True, tokenizer) == "Model"
  assert squad_postprocess.get_final_text("Model", "Model", True, tokenizer) == "Model"


def test_sentencepiece_answer_inside_a_word(tokenizer):
  example = _example("data was random (read,write) fast", "write")
  features = squad_windows.convert_examples_to_features([example], tokenizer, is_training=True)
  start, end = features.start_positions[0], features.end_positions[0]
  pieces = features.tokens[0][start:end + 1]
  assert "".join(pieces).replace("\u2581", "") == "write"


def test_get_final_text_falls_back_to_the_words():
  assert squad_postprocess.get_final_text("tesla ' s", "Tesla's", True) == "Tesla's"
  assert squad_postprocess.get_final_text("1895", "(1895).", True) == "1895"
  assert squad_postprocess.get_final_text("edison", "Tesla's", True) == "Tesla's"
  # Accent stripping changes the length: no alignment, the words are kept.
  assert squad_postprocess.get_final_text("cafe", "Café\u0301x", True) == "Café\u0301x"


def _squad_json(paragraphs: list[dict], version: str) -> dict:
  return {"version": version, "data": [{"title": "T", "paragraphs": paragraphs}]}


def test_read_squad_json_v1(tmp_path):
  context = "Nikola Tesla was born  in 1856."
  qas = [{"id": "a", "question": "Who?", "answers": [
             {"text": "Nikola Tesla", "answer_start": 0},
             {"text": "Tesla", "answer_start": 7}]},
         {"id": "b", "question": "When?", "answers": [{"text": "1856", "answer_start": 3}]},
         {"id": "c", "question": "Born?", "answers": [{"text": "born  in", "answer_start": 17}]}]
  path = tmp_path / "v1.json"
  path.write_text(json.dumps(_squad_json([{"context": context, "qas": qas}], "1.1")))
  train = squad.read_squad_json(str(path), is_training=True)
  assert [example.qas_id for example in train] == ["a", "c"]  # b's offset is wrong: skipped.
  assert train[0].doc_tokens == ["Nikola", "Tesla", "was", "born", "in", "1856."]
  assert (train[0].start_position, train[0].end_position) == (0, 1)
  assert train[0].orig_answer_text == "Nikola Tesla"
  assert train[0].answers == ["Nikola Tesla", "Tesla"]
  assert (train[1].start_position, train[1].end_position) == (3, 4)
  dev = squad.read_squad_json(str(path), is_training=False)
  assert [example.qas_id for example in dev] == ["a", "b", "c"]
  assert dev[1].answers == ["1856"] and dev[1].start_position == -1
  assert not any(example.is_impossible for example in dev)


def test_read_squad_json_v2_and_errors(tmp_path):
  qas = [{"id": "yes", "question": "Q?", "is_impossible": False,
          "answers": [{"text": "w2", "answer_start": 3}]},
         {"id": "no", "question": "Q?", "is_impossible": True, "answers": [],
          "plausible_answers": [{"text": "w1", "answer_start": 0}]}]
  path = tmp_path / "v2.json"
  path.write_text(json.dumps(_squad_json([{"context": "w1 w2 w3", "qas": qas}], "v2.0")))
  for is_training in (True, False):
    examples = squad.read_squad_json(str(path), is_training=is_training)
    assert [(e.qas_id, e.is_impossible, e.answers) for e in examples] == [
        ("yes", False, ["w2"]), ("no", True, [])]
    assert (examples[1].start_position, examples[1].orig_answer_text) == (-1, "")
  with pytest.raises(errors.UserError, match="does not exist"):
    squad.read_squad_json(str(tmp_path / "missing.json"), is_training=True)
  (tmp_path / "bad.json").write_text("{not json")
  with pytest.raises(errors.UserError, match="bad.json"):
    squad.read_squad_json(str(tmp_path / "bad.json"), is_training=True)
  (tmp_path / "wrong.json").write_text(json.dumps({"data": [{"paragraphs": [{"qas": []}]}]}))
  with pytest.raises(errors.UserError, match="context"):
    squad.read_squad_json(str(tmp_path / "wrong.json"), is_training=True)


@pytest.mark.parametrize("name", ["squad/v1.1", "squad/v2.0"])
def test_tfds_examples_from_mock_data(name, wordpiece_tokenizer):
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=6):
    dev = squad.tfds_examples(name, "validation", None, is_training=False)
    train = squad.tfds_examples(name, "train", None, is_training=True)
  # Mock text is random, its answer offsets rarely match: evaluation keeps every question,
  # training keeps those it can locate (and v2.0's impossible ones).
  assert len(dev) == 6
  assert len(train) <= 6
  for example in dev + train:
    assert isinstance(example.qas_id, str) and isinstance(example.question_text, str)
    assert all(isinstance(word, str) and word for word in example.doc_tokens)
    assert all(isinstance(answer, str) for answer in example.answers)
    if example.is_impossible:
      assert example.answers == [] and example.start_position == -1
  assert all(example.is_impossible or example.start_position >= 0 for example in train)
  if name == "squad/v1.1":
    assert not any(example.is_impossible for example in dev)
  features = squad_windows.convert_examples_to_features(dev, wordpiece_tokenizer, max_seq_length=32,
                                                doc_stride=8, max_query_length=8,
                                                is_training=False)
  assert sorted(set(features.example_index.tolist())) == list(range(6))
  start_logits = np.random.default_rng(0).normal(size=features.input_ids.shape)
  predictions, nbest, null_score_diffs = squad_postprocess.postprocess(
      dev, features, start_logits, -start_logits, version_2_with_negative=name == "squad/v2.0")
  assert set(predictions) == set(nbest) == set(null_score_diffs) == {e.qas_id for e in dev}
  with pytest.raises(errors.UserError, match="squad/v3"):
    squad.tfds_examples("squad/v3", "train", None, is_training=True)
