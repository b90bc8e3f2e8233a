"""Pre-training (MLM + NSP): train.py describes the mode to runtime/loop.py; train_program.py
is its compiled step (no TensorFlow); phases.py the sequence-length phases; evaluation.py
mode=eval. Its data, from raw text to batches, is in data/."""
