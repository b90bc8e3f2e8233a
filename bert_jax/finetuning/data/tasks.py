"""The task registry: every fine-tuning task, its family, its data and how it is scored.

A task (`TASKS`, `get_task`, `register`) says what the data looks like and how it is scored;
its family (finetuning/families/) says how examples become features and outputs predictions:

  cola sst2 mrpc qqp stsb mnli qnli rte wnli   GLUE, from TFDS 'glue/<task>' (ax has no labels)
  conll2003                                    NER, from TFDS 'conll2003'
  squad squad_v1.1 squad_v2.0                  SQuAD, from TFDS 'squad/v1.1' | 'squad/v2.0'
  swag hellaswag multiple_choice               multiple choice (hellaswag from TFDS)
  classification regression ner                the user's own files only

`load_examples` reads one split of a text or tagging task, with its family's `Reader`: from
TFDS, or from local files when data.train_file / data.eval_file is set (they replace TFDS for
their split; formats in task_files).

Fields of config.data read here (a missing field takes the default in brackets):
  tfds_data_dir ('')   TFDS data_dir; '' = TFDS's default.
  train_file ('')      Local training file(s): a path or comma-separated globs.
  eval_file ('')       Local eval file(s), read for every eval split of the task.
  text_a_key ('')      Column (TFDS feature) of the first text, NER: of the word list.
                       '' = the task's: 'sentence' for classification/regression, 'tokens'
                       for ner, GLUE's own names (e.g. 'question1') for GLUE tasks.
  text_b_key ('')      Column of the second text; '' = the task's (none for the generic
                       classification/regression tasks, so set it for pairs).
  label_key ('')       Column of the label (NER: of the tag list); '' = 'label' ('ner' for NER).
  label_names ('')     Comma-separated labels of a local file in id order; '' = the task's
                       (GLUE, conll2003), else the sorted distinct labels of data.train_file.
                       NER: 'O' is always id 0 (listed first; found labels put it first).
  max_examples (0)     Read at most this many examples of a split; 0 = all.

TFDS downloads and prepares a dataset the first time it is asked for (GLUE ~1 GB in all for
QQP and MNLI, minutes); without network that fails, and is reported as one line naming it.
"""

from collections.abc import Sequence
import dataclasses
from typing import Any, Callable

import ml_collections

from bert_jax import errors
from bert_jax import tfds_datasets
from bert_jax.finetuning.data import task_files

TextExample = task_files.TextExample
TokenExample = task_files.TokenExample

METRICS = ("accuracy", "f1", "matthews_corrcoef", "pearson", "spearman", "entity_f1",
           "exact_match")
# The tag of a word outside every entity (IOB). Token tasks keep it at id 0: the label of
# padding, and the prediction for words cut off by truncation.
OUTSIDE_LABEL = task_files.OUTSIDE_LABEL
OUTSIDE_ID = 0
# Rows read from TFDS at a time (text tasks): one numpy batch is far cheaper than 1024 examples.
_TFDS_BATCH_SIZE = 1024


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """What a fine-tuning task's data is and how it is scored.

  Attributes:
    name: Name in TASKS (the config's task name).
    family: 'classification' ([CLS] -> one of num_labels), 'regression' ([CLS] -> one number)
      or 'token' (a tag per word, NER).
    tfds_name: TFDS dataset ('glue/sst2'); '' = local files only.
    text_keys: Features (columns) of the text: one, or two for a pair; NER: the word list.
    label_key: Feature (column) of the label; NER: of the tag list.
    num_labels: Number of classes; 1 for regression; 0 = as many as the label names
      load_examples returns (tasks whose labels come from the user's files).
    label_names: The labels in id order; None for regression and for the user's own tasks.
    train_split: Split to train on.
    eval_splits: Splits to evaluate on (each scored on its own; MNLI has two).
    metrics: Metric names, the task's official ones first (names in METRICS).
    train_examples: The published size of the training split (TFDS tasks), what an estimate
      counts steps from before any data is read; 0 = unknown (the user's own files).
  """
  name: str
  family: str
  tfds_name: str
  text_keys: tuple[str, ...]
  label_key: str
  num_labels: int
  label_names: tuple[str, ...] | None
  train_split: str
  eval_splits: tuple[str, ...]
  metrics: tuple[str, ...]
  train_examples: int = 0


@dataclasses.dataclass(frozen=True)
class Reader:
  """How a family's examples are read (its data side, finetuning/families/, names one).

  Attributes:
    files: (task, patterns, field, split, text keys, label key, label names, max_examples) ->
      (examples, label names) from local files.
    tfds: (task, split, dataset, the label's TFDS feature, text keys, label key) -> (examples,
      label names) from a TFDS split.
    pairs: Whether an example may have a second text (data.text_b_key).
    named_labels: Whether labels are names with ids (False: numbers, regression's scores).
  """
  files: Callable[..., tuple[list[Any], tuple[str, ...] | None]]
  tfds: Callable[..., tuple[list[Any], tuple[str, ...] | None]]
  pairs: bool = True
  named_labels: bool = True


def _glue(name: str, text_keys: tuple[str, ...], label_names: tuple[str, ...] | None,
          train_examples: int, metrics: tuple[str, ...] = ("accuracy",),
          eval_splits: tuple[str, ...] = ("validation",)) -> TaskSpec:
  # Feature and label names as TFDS 4.9.10's glue.py has them (its label ids are theirs); STS-B
  # has a score, not labels.
  return TaskSpec(name=name, family="classification" if label_names else "regression",
                  tfds_name=f"glue/{name}", text_keys=text_keys, label_key="label",
                  num_labels=len(label_names) if label_names else 1, label_names=label_names,
                  train_split="train", eval_splits=eval_splits, metrics=metrics,
                  train_examples=train_examples)


def _squad(name: str, tfds_name: str, train_examples: int) -> TaskSpec:
  # The original's run_squad.py reads SQuAD's JSON; TFDS's squad builders hold the same rows.
  return TaskSpec(name=name, family="span", tfds_name=tfds_name,
                  text_keys=("question", "context"), label_key="answers", num_labels=2,
                  label_names=None, train_split="train", eval_splits=("validation",),
                  metrics=("f1", "exact_match"), train_examples=train_examples)


# CoNLL-2003's tags as TFDS's conll2003 builder has them, in id order.
CONLL2003_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")

_ENTAILMENT = ("entailment", "not_entailment")
# Metrics as the GLUE leaderboard reports them.
TASKS: dict[str, TaskSpec] = {task.name: task for task in (
    _glue("cola", ("sentence",), ("unacceptable", "acceptable"), 8551, ("matthews_corrcoef",)),
    _glue("sst2", ("sentence",), ("negative", "positive"), 67349),
    _glue("mrpc", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"), 3668,
          ("f1", "accuracy")),
    _glue("qqp", ("question1", "question2"), ("not_duplicate", "duplicate"), 363846,
          ("f1", "accuracy")),
    _glue("stsb", ("sentence1", "sentence2"), None, 5749, ("pearson", "spearman")),
    _glue("mnli", ("premise", "hypothesis"), ("entailment", "neutral", "contradiction"), 392702,
          eval_splits=("validation_matched", "validation_mismatched")),
    _glue("qnli", ("question", "sentence"), _ENTAILMENT, 104743),
    _glue("rte", ("sentence1", "sentence2"), _ENTAILMENT, 2490),
    # WNLI's ids are the other way round from RTE's and QNLI's.
    _glue("wnli", ("sentence1", "sentence2"), ("not_entailment", "entailment"), 635),
    TaskSpec(name="conll2003", family="token", tfds_name="conll2003", text_keys=("tokens",),
             label_key="ner", num_labels=len(CONLL2003_TAGS), label_names=CONLL2003_TAGS,
             train_split="train", eval_splits=("dev",), metrics=("entity_f1",),
             train_examples=14041),
    # SQuAD (span family): data.version_2_with_negative=true reads v2.0 whichever is named.
    _squad("squad", "squad/v1.1", 87599),
    _squad("squad_v1.1", "squad/v1.1", 87599),
    _squad("squad_v2.0", "squad/v2.0", 130319),
    # The user's own data: data.train_file and data.eval_file. Accuracy only: binary F1 means
    # nothing with more than two classes.
    TaskSpec(name="classification", family="classification", tfds_name="",
             text_keys=("sentence",), label_key="label", num_labels=0, label_names=None,
             train_split="train", eval_splits=("validation",), metrics=("accuracy",)),
    TaskSpec(name="regression", family="regression", tfds_name="", text_keys=("sentence",),
             label_key="label", num_labels=1, label_names=None, train_split="train",
             eval_splits=("validation",), metrics=("pearson", "spearman")),
    TaskSpec(name="ner", family="token", tfds_name="", text_keys=("tokens",), label_key="ner",
             num_labels=0, label_names=None, train_split="train", eval_splits=("validation",),
             metrics=("entity_f1",)),
    # Multiple choice (data/choices.py): SWAG's CSV layout on local files (TFDS has no SWAG);
    # 'multiple_choice' is the same on files with other columns (data.choice_keys);
    # HellaSwag from TFDS (or files in SWAG's layout).
    *(TaskSpec(name=name, family="multiple_choice", tfds_name=tfds_name, text_keys=keys,
               label_key="label", num_labels=1, label_names=None, train_split="train",
               eval_splits=("validation",), metrics=("accuracy",), train_examples=size)
      for name, tfds_name, keys, size in (("swag", "", ("sent1", "sent2"), 73546),
                                          ("multiple_choice", "", ("sent1", "sent2"), 0),
                                          ("hellaswag", "hellaswag", ("context", "endings"),
                                           39905))),
)}


def get_task(name: str) -> TaskSpec:
  """The task called name; UserError listing the known ones if there is none."""
  if name not in TASKS:
    raise errors.UserError(f"unknown task {name!r}: known tasks are {', '.join(TASKS)}")
  return TASKS[name]


def eval_split_names(task: TaskSpec, data_config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The splits to evaluate: the task's, or just one when data.eval_file replaces them all."""
  return task.eval_splits[:1] if data_config.eval_file else task.eval_splits


def register(task: TaskSpec) -> TaskSpec:
  """Adds a task to TASKS (a name is registered once); its family must be registered too
  (finetuning/families/registry.py)."""
  if task.name in TASKS:
    raise ValueError(f"task {task.name!r} is already registered")
  TASKS[task.name] = task
  return task


def load_examples(task: TaskSpec, split: str, data_config: ml_collections.ConfigDict,
                  label_names: Sequence[str] | None = None, *, reader: Reader
                  ) -> tuple[list[Any], tuple[str, ...] | None]:
  """Reads the examples of one split, from TFDS or from local files.

  Args:
    task: The task.
    split: task.train_split, or one of task.eval_splits (for TFDS also any split or slice TFDS
      knows, e.g. 'train[:10%]'). With local files the train split reads data.train_file and
      every other split data.eval_file.
    data_config: config.data (fields in the module docstring).
    label_names: Local files: the label names the train split returned. Eval must use the same
      ids as training: pass them (if not, the train file is read again to find them).
      data.label_names, when set, wins; TFDS tasks always use TFDS's.
    reader: How the task's family reads examples (its record's `reader`).

  Returns:
    (examples, label names in id order; None where labels are numbers): the reader's examples
    (TextExamples, TokenExamples).

  Raises:
    errors.UserError: For a bad config field, a file that is missing or has a bad row, a TFDS
      dataset that is not there and cannot be downloaded, or a split without labels.
  """
  max_examples = data_config.max_examples
  if max_examples < 0:
    raise errors.UserError(f"data.max_examples must be >= 0 (0 = all), not {max_examples}")
  is_train = split.split("[")[0] == task.train_split
  field = "data.train_file" if is_train else "data.eval_file"
  patterns = data_config.train_file if is_train else data_config.eval_file
  keys, label_key = text_keys(task, data_config, reader.pairs)
  if patterns:
    return _load_local(task, split, patterns, field, keys, label_key, data_config,
                       label_names, max_examples, reader)
  if not task.tfds_name:
    raise errors.UserError(f"task {task.name!r} reads your own files: set {field}")
  return _load_tfds(task, split, data_config.tfds_data_dir, keys, label_key, max_examples,
                    reader)


def text_keys(task: TaskSpec, data_config: ml_collections.ConfigDict, pairs: bool = True
              ) -> tuple[tuple[str, ...], str]:
  """The text and label columns: the config's where it names them, else the task's; `pairs`
  says whether the task's family reads a second text."""
  text_a_key = data_config.text_a_key or task.text_keys[0]
  text_b_key = data_config.text_b_key or (
      task.text_keys[1] if len(task.text_keys) > 1 else "")
  if text_b_key and not pairs:
    raise errors.UserError(f"data.text_b_key: task {task.name!r} tags words, it has no second "
                           "text")
  text_keys = (text_a_key, text_b_key) if text_b_key else (text_a_key,)
  return text_keys, data_config.label_key or task.label_key


def _load_local(task, split, patterns, field, text_keys, label_key, data_config, label_names,
                max_examples, reader):
  names = task_files.parse_label_names(data_config.label_names)
  if names is None:
    names = tuple(label_names) if label_names is not None else task.label_names
  if names is None and reader.named_labels and field != "data.train_file":
    # Ids found in the eval file alone would differ from training's whenever a label is
    # missing from it: take them from the train file.
    train_patterns = data_config.train_file
    if not train_patterns:
      raise errors.UserError(f"data.label_names is empty and there is no data.train_file to "
                             f"take the labels of {field} from: set data.label_names")
    _, names = _load_local(task, task.train_split, train_patterns, "data.train_file", text_keys,
                           label_key, data_config, None, max_examples, reader)
  return reader.files(task, patterns, field, split, text_keys, label_key, names, max_examples)


def check_outside_label(label_names: Sequence[str], where: str) -> None:
  """Token tasks keep the tag of no entity at id 0 (featurize's padding and cut-off words)."""
  if not label_names or label_names[OUTSIDE_ID] != OUTSIDE_LABEL:
    raise errors.UserError(f"{where} must have the tag {OUTSIDE_LABEL!r} first, at id "
                           f"{OUTSIDE_ID} (IOB tags; got {list(label_names)}): set "
                           f"data.label_names")


def _load_tfds(task, split, data_dir, text_keys, label_key, max_examples, reader):
  builder = tfds_datasets.prepared_builder(task.tfds_name, data_dir)
  features = builder.info.features
  for key in (*text_keys, label_key):
    if key not in features:
      raise errors.UserError(f"TFDS dataset {task.tfds_name!r} has no feature {key!r} "
                             f"(features: {', '.join(features)}): check data.text_a_key, "
                             f"data.text_b_key and data.label_key")
  try:
    dataset = builder.as_dataset(split=split, shuffle_files=False)
  except (ValueError, KeyError) as e:
    raise errors.UserError(f"TFDS dataset {task.tfds_name!r} cannot read split {split!r}: "
                           f"{str(e).strip().splitlines()[0]}") from None
  if max_examples:
    dataset = dataset.take(max_examples)
  return reader.tfds(task, split, dataset, features[label_key], text_keys, label_key)


def text(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)
