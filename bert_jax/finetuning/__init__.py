"""Fine-tuning (finetune.py, described to runtime/loop.py), predictions -> metrics (task_eval.py,
task_metrics.py), and mode=encode (encode.py). Its data (tasks, local files, SQuAD) is in data/."""
