"""Pre-training data: corpora, instance creation, the tf.data input pipeline."""
