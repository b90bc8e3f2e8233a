"""The model: BertConfig, the encoder, the task heads, the losses and the FLOPs of a step.

JAX and Flax only (no TensorFlow, nothing from the other subpackages), so a GPU box with only
JAX runs it, and bench/device_check.py times it there.
"""
