"""Pre-training data: corpora, instance creation and records (prepare.py), the held-out
documents, the tf.data input pipeline with masking, and the run's inputs (inputs.py)."""
