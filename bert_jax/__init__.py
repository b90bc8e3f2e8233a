"""bert_jax: BERT pre-training and fine-tuning in JAX/Flax.

Subpackages, each importing only those listed before it (and errors.py, files.py):
    model/        BertConfig, the encoder, heads, losses, FLOPs (JAX only: no TensorFlow)
    tokenizers/   SentencePiece and WordPiece behind one interface, the special tokens
    runtime/      what every mode runs on: train state, mesh and shardings, optimizer, the
                  training loop, checkpoints and resume, preemption, NaN guard, metrics, reports
    interop/      Hugging Face, Google TF and Orbax checkpoints in and out
    config/       the config schema, its validation and its reference (docs/CONFIG.md)
    pretraining/  MLM + NSP: its data (text -> instances -> records -> tf.data), program, mode
    finetuning/   every task family (families/): data, losses, metrics, predict, encode
    tpu/          ahead-of-time compilation for TPU slices, and memory/time estimates

The commands: `python -m bert_jax.main` (every mode), bert_jax.pretraining.prepare,
bert_jax.finetuning.data.example_task, bert_jax.tokenizers.tokenization, bert_jax.interop,
bert_jax.tpu.aot, bert_jax.tpu.estimate and bert_jax.config.doc. Their old paths
(bert_jax.aot, bert_jax.estimate, bert_jax.config_doc, bert_jax.tokenization,
bert_jax.data.prepare, bert_jax.data.example_task) are one-line aliases (moved.py) that say
where the command is now and run it there.
"""

import platform
import sys

# jax 0.11 and later need Python 3.12: on an older Python the first jax import would fail deep in
# a traceback (or an old jax would be found), so say it in one line, before anything is imported.
if sys.version_info < (3, 12):
  raise SystemExit(f"bert_jax needs Python 3.12 or newer (jax 0.11 and later do); this is Python "
                   f"{platform.python_version()} ({sys.executable}): make the venv with "
                   "python3.12 -m venv .venv")
