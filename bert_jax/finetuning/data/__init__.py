"""Fine-tuning data: the task registry, local files, SQuAD windows and their post-processing,
the run's tokenized features (finetune_data.py) and the packaged example task."""
