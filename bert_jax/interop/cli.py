"""`python -m bert_jax.interop`: a checkpoint of any kind to an Orbax params dir or an HF dir.

    python -m bert_jax.interop --input=PATH --output=NEW_DIR --format=orbax|hf \
        [--bert_config=FILE] [--vocab_file=FILE] [--do_lower_case=true|false] [--overwrite]

--format=hf writes what `transformers` loads with no extra code: the weights with their head
and the tokenizer (export.py). Mistakes are one line on stderr and exit status 1, before
anything is written.
"""

import math
import os
import sys

from absl import app
from absl import flags
from absl import logging

from bert_jax import backends
from bert_jax import disk_full
from bert_jax import errors
from bert_jax import signals
from bert_jax.interop import export
from bert_jax.interop import hf_params


def _main(argv: list[str]) -> None:
  del argv
  values = flags.FLAGS
  if not values["verbosity"].present:
    # Orbax logs every step of a save or restore at INFO; the summary below is what matters.
    logging.set_verbosity(logging.WARNING)
  backends.skip_tpu_without_chips()
  try:
    # A stopped export, or one that fills the disk, leaves no --output, whole or not.
    with signals.stopping(), disk_full.reported(values.output):
      done = _export(values)
  except errors.UserError as e:
    sys.exit(f"bert_jax.interop: error: {e}")
  except signals.Stopped as e:
    print(e.line, flush=True)
    sys.exit(0)
  _summary(values, done)


def _export(values: flags.FlagValues) -> export.Exported:
  """The conversion the flags ask for."""
  output = values.output.rstrip("/")
  if os.path.abspath(output) == os.path.abspath(values.input.rstrip("/")):
    raise errors.UserError(f"--output={values.output} is --input: it would replace the "
                           "checkpoint it reads")
  if values.format == "hf":
    return export.export_hf(values.input, output, vocab_file=values.vocab_file,
                            do_lower_case=values.do_lower_case,
                            bert_config=values.bert_config, overwrite=values.overwrite)
  return export.export_orbax(values.input, output, vocab_file=values.vocab_file,
                             bert_config=values.bert_config, overwrite=values.overwrite)


def _summary(values: flags.FlagValues, done: export.Exported) -> None:
  output = values.output.rstrip("/")
  report, config, head = done.report, done.config, done.report.head
  count = sum(math.prod(shape) for shape in hf_params.expected_shapes(config, head).values())
  labels = f" ({', '.join(head.label_names)})" if head.label_names else ""
  print(f"Read {values.input} ({report.format}): {head.architecture}{labels}, "
        f"{count / 1e6:.2f}M params, "
        f"{config.num_hidden_layers} layers, hidden {config.hidden_size}, "
        f"vocab {config.vocab_size}")
  if report.initialized:
    print(f"Not in the checkpoint, initialised: {', '.join(report.initialized)}")
  if report.ignored:
    print(f"Skipped: {hf_params.format_names(report.ignored)}")
  if values.format == "hf":
    print(f"Wrote {output}: {', '.join(done.files)} (tokenizer from {done.vocab_file})")
    print(f"Load it with transformers (USE_TF=0 beside TensorFlow): "
          f"transformers.{head.architecture}.from_pretrained({output!r}); see {output}/README.md")
  else:
    vocab = f" (vocabulary from {done.vocab_file})" if done.vocab_file else ""
    print(f"Wrote {output}: {', '.join(done.files)}{vocab}; use it as "
          f"--config.init_checkpoint={output}")


def main() -> None:
  flags.DEFINE_string("input", None, "A bert_jax workdir (pre-training, or fine-tuning: its best "
                      "params), an Orbax params dir, an HF directory or a TF checkpoint prefix.")
  flags.DEFINE_string("output", None, "New directory to write.")
  flags.DEFINE_enum("format", "orbax", ["orbax", "hf"], "What to write: an Orbax params dir, or "
                    "an HF directory (config.json + model.safetensors + tokenizer + README.md).")
  flags.DEFINE_string("bert_config", None, "bert_config.json of a TF checkpoint, if it is not "
                      "next to the checkpoint.")
  flags.DEFINE_string("vocab_file", None, "The vocabulary (SentencePiece .model or WordPiece "
                      "vocab.txt) to write beside the weights; default: the one the input records "
                      "or keeps beside it (--format=hf needs one).")
  flags.DEFINE_boolean("do_lower_case", None, "--format=hf, WordPiece: the casing; default: the "
                       "run's data.do_lower_case.")
  flags.DEFINE_boolean("overwrite", False, "Replace an --output that exists and is not empty "
                       "(only once the new one is complete).")
  flags.mark_flags_as_required(["input", "output"])
  app.run(_main, flags_parser=errors.flags_parser("bert_jax.interop"))


if __name__ == "__main__":
  main()
