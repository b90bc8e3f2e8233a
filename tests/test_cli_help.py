"""Every command's --help lists its own flags (absl lists only the main module's key flags)."""

import os
import subprocess
import sys

import pytest

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("module, expected", [
    ("bert_jax.main", {"--config", "--workdir", "--num_processes"}),
    ("bert_jax.pretraining.prepare", {"--input_file", "--vocab_file", "--output_dir",
                                      "--max_seq_length", "--dupe_factor", "--eval_fraction",
                                      "--[no]next_sentence_prediction"}),
    ("bert_jax.finetuning.data.example_task", {"--output_dir"}),
    ("bert_jax.tokenizers.tokenization", {"--input", "--vocab_size", "--output"}),
    ("bert_jax.interop", {"--input", "--output", "--format"}),
    ("bert_jax.tpu.aot", {"--config", "--topology"}),
    ("bert_jax.tpu.estimate", {"--config", "--topology", "--[no]aot"}),
    ("bert_jax.config.doc", {"--[no]check"}),
])
def test_help_lists_the_commands_own_flags(module, expected):
  result = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True,
                          cwd=_REPO, check=False)
  # absl's --help exits with status 1 by design; what matters is what it lists.
  assert "Traceback" not in result.stderr, result.stderr
  listed = {line.split(":")[0].strip() for line in result.stdout.splitlines()
            if line.startswith("  --")}
  assert expected <= listed
