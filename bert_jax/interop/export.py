"""Any model bert_jax trains, as a directory `transformers` loads with no extra code.

    python -m bert_jax.interop --input=WORKDIR --output=DIR --format=hf

`export_hf` writes config.json (the head's architecture, id2label/label2id, problem_type),
model.safetensors, the tokenizer (hf_tokenizer.py) and a README.md with the lines that load it.
A pre-training workdir exports as BertForPreTraining (fill-mask works); a fine-tuning workdir
exports the params of its best eval with their head (hf_heads.py: sequence or token
classification, question answering, multiple choice). `export_orbax` writes an
Orbax params dir instead. Both write a temporary directory beside the output and rename it
into place when complete, so a failed or interrupted export leaves what was there before.
"""

import dataclasses
import os

import tensorflow as tf

from bert_jax import errors
from bert_jax.interop import convert
from bert_jax.interop import hf_heads
from bert_jax.interop import hf_tokenizer
from bert_jax.model import modeling
from bert_jax.tokenizers import vocab_location

@dataclasses.dataclass
class Exported:
  """What an export read and wrote (the CLI prints it)."""
  report: convert.LoadReport
  config: modeling.BertConfig
  vocab_file: str
  files: list[str]


def vocabulary(path: str, report: convert.LoadReport, vocab_file: str | None,
                do_lower_case: bool | None) -> tuple[str, bool]:
  """The vocabulary the model was trained with, and its casing: the flags, else what the
  checkpoint records or keeps beside it."""
  run = report.meta.get("config", {})
  if do_lower_case is None:
    do_lower_case = report.meta.get("do_lower_case",
                                    run.get("data", {}).get("do_lower_case", True))
  if vocab_file:
    if not tf.io.gfile.exists(vocab_file):
      raise errors.UserError(f"--vocab_file={vocab_file} does not exist")
    return vocab_file, do_lower_case
  # A fine-tuning run records its vocabulary (older ones: their config says where it was).
  found = (report.meta.get("vocab_file") or run.get("data", {}).get("vocab_file") or
           vocab_location.beside_checkpoint(run.get("init_checkpoint", "")) or
           vocab_location.beside_checkpoint(path))
  if not found:
    raise errors.UserError(f"{path} has no vocabulary beside it (vocab.txt, vocab.model, or a "
                           "bert_jax workdir's data/): pass --vocab_file")
  return found, do_lower_case


def _readme(head: hf_heads.Head, config: modeling.BertConfig, source: str, output: str) -> str:
  labels = f" Labels: {', '.join(head.label_names)}." if head.label_names else ""
  hf = head.record.hf
  use = hf.usage
  if hf.pipeline:
    # Longer inputs are cut as bert_jax cuts them (tokenizer_config's model_max_length).
    truncation = ", truncation=True" if hf.truncate else ""
    use = (f'    pipe = transformers.pipeline("{hf.pipeline}", model="{output}")\n'
           f"    print(pipe({hf.example}{truncation}))\n")
  return f"""# BERT exported by bert_jax

{head.architecture}, L{config.num_hidden_layers}/H{config.hidden_size}/\
A{config.num_attention_heads}, vocabulary {config.vocab_size}, from `{source}`.{labels}

transformers with TensorFlow installed beside it (bert_jax installs tensorflow-cpu) needs its
TensorFlow path off: set USE_TF=0 before transformers is imported.

    import os
    os.environ["USE_TF"] = "0"
    import transformers

    model = transformers.{head.architecture}.from_pretrained("{output}")
    tokenizer = transformers.AutoTokenizer.from_pretrained("{output}")
{use}"""


def _in_place(output: str, overwrite: bool, write) -> None:
  """Runs `write(directory)` on a new temporary directory beside `output`, then puts it at
  `output` (replacing it only when `overwrite`). On gs://, where a directory cannot be
  renamed, it writes `output` directly."""
  exists = tf.io.gfile.exists(output) and (not tf.io.gfile.isdir(output)
                                           or tf.io.gfile.listdir(output))
  if exists and not overwrite:
    raise errors.UserError(f"--output={output} exists and is not empty: pass --overwrite to "
                           "replace it, or name a new directory")
  if "://" in output:
    write(output)
    return
  parent = os.path.dirname(os.path.abspath(output))
  os.makedirs(parent, exist_ok=True)
  temporary = os.path.join(parent, f".{os.path.basename(output)}.tmp-{os.getpid()}")
  if os.path.exists(temporary):
    tf.io.gfile.rmtree(temporary)
  try:
    write(temporary)
    if os.path.exists(output):
      previous = temporary + ".previous"
      os.rename(output, previous)
      os.rename(temporary, output)
      tf.io.gfile.rmtree(previous)
    else:
      os.rename(temporary, output)
  finally:
    if os.path.exists(temporary):
      tf.io.gfile.rmtree(temporary)


def export_hf(path: str, output: str, *, vocab_file: str | None = None,
              do_lower_case: bool | None = None, bert_config: str | None = None,
              overwrite: bool = False) -> Exported:
  """Writes `path`'s model (any kind convert.load_params reads) as an HF directory at `output`.

  Args:
    path: A pre-training or fine-tuning workdir, an Orbax params dir, an HF dir or a TF checkpoint.
    output: The directory to write.
    vocab_file: The vocabulary; None = the one the checkpoint records or keeps beside it.
    do_lower_case: WordPiece casing; None = the run's.
    bert_config: A TF checkpoint's bert_config.json, if it is not next to it.
    overwrite: Replace an `output` that exists and is not empty.

  Returns:
    What was read and written.
  """
  config, params, report = convert.load_params(path, bert_config, return_report=True)
  if report.head.record.hf is None:
    raise errors.UserError(f"{path} holds a {report.head.family} model, a task family with no "
                           "transformers architecture: export it with --format=orbax")
  vocab_file, do_lower_case = vocabulary(path, report, vocab_file, do_lower_case)
  # Read before anything is written: a vocabulary that is missing or not bert_jax's is a
  # one-line error, and one larger than the embeddings a mismatch.
  from bert_jax.tokenizers import tokenization  # pylint: disable=g-import-not-at-top
  vocab_size = tokenization.load_tokenizer(vocab_file, do_lower_case).vocab_size
  if vocab_size > config.vocab_size:
    raise errors.UserError(f"{vocab_file} has {vocab_size} tokens, more than the model's "
                           f"vocab_size={config.vocab_size}: wrong --vocab_file?")
  # A fine-tuned model truncates as it was fine-tuned (and is evaluated): at the run's length.
  max_length = report.meta.get("max_seq_length") or config.max_position_embeddings
  files = []

  def write(directory):
    convert.save_hf(directory, config, params, report.head)
    files[:] = ["config.json", "model.safetensors"] + hf_tokenizer.write(
        vocab_file, do_lower_case, directory, max_length)
    with tf.io.gfile.GFile(os.path.join(directory, "README.md"), "w") as f:
      f.write(_readme(report.head, config, path, os.path.abspath(output)))
    files.append("README.md")

  _in_place(output, overwrite, write)
  return Exported(report, config, vocab_file, files)


def export_orbax(path: str, output: str, *, vocab_file: str | None = None,
                 bert_config: str | None = None, overwrite: bool = False) -> Exported:
  """Writes `path`'s params as an Orbax params dir (config.json + params/) at `output`, with
  the vocabulary (as vocab.txt or vocab.model) when one is given or found."""
  config, params, report = convert.load_params(path, bert_config, return_report=True)
  if vocab_file:
    vocab_file, _ = vocabulary(path, report, vocab_file, None)
  else:
    try:
      vocab_file, _ = vocabulary(path, report, None, None)
    except errors.UserError:
      vocab_file = ""  # Weights only: fine-tuning from it then names its data.vocab_file.
    if vocab_file and not tf.io.gfile.exists(vocab_file):
      vocab_file = ""  # A run's recorded vocabulary that has since gone.
  files = ["config.json", "params"]
  if vocab_file:
    files.append("vocab.model" if vocab_file.endswith(".model") else "vocab.txt")

  def write(directory):
    convert.save_orbax_params(directory, config, params, report.head)
    if vocab_file:
      tf.io.gfile.copy(vocab_file, os.path.join(directory, files[-1]))

  _in_place(output, overwrite, write)
  return Exported(report, config, vocab_file, files)
