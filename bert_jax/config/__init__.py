"""The config schema: every field, its default and its doc, once, inside the package.

base.py (pre-training) and finetune.py (fine-tuning, starting from base) are what configs/*.py
build on (`from bert_jax.config import base`), what validation checks field names against, and
what docs/CONFIG.md is generated from, so an installed package can run and check any config
file from any directory.
"""
