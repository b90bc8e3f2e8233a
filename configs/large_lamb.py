"""BERT-Large with LAMB at 64k/32k batches: "BERT in 76 minutes" (You et al., ICLR 2020).

    python -m bert_jax.main --config=configs/large_lamb.py --workdir=DIR [--config.a.b=value ...]

The paper's mixed-batch recipe ("64k/32k"), as remembered here, to be checked against the paper
(arXiv:1904.00962, its BERT tables and appendix) and NVIDIA DeepLearningExamples'
scripts/run_pretraining.sh, which runs the same recipe:
  - LAMB, beta1 0.9, beta2 0.999, epsilon 1e-6, weight decay 0.01, gradients clipped to norm 1.
  - Phase 1: sequence length 128 (20 predictions), global batch 65,536, 7,038 steps.
  - Phase 2: sequence length 512 (80 predictions), global batch 32,768, 1,561 steps (NVIDIA's
    script: 1,563), with the learning rate warmed up again; 8,599 steps in all, 76 minutes on
    1,024 TPUv3 chips to SQuAD v1.1 F1 90.58.
  - Learning rates and warmup: the peaks 6e-3 (phase 1) and 4e-3 (phase 2) and warmups of
    28.43% (2,000 of 7,038 steps) and 12.8% (200 of 1,563) are NVIDIA's figures for this batch
    size, remembered more surely than the paper's own table (whose rates follow a square-root
    scaling with the batch); the paper states warmup as a fraction of the steps.
  - The decay after warmup is linear here (BERT's); NVIDIA's LAMB scheduler decays
    polynomially with power 0.5.

A global batch of 65,536 at seq 128 is 64 sequences per chip on 1,024 chips; on fewer chips
raise train.grad_accum_steps (the same update, in pieces).

Both phases run as one job (train.phase2_start_step): one prepare makes the instances at 128
and at 512 from the same documents, phase 1 reads the 128 ones, and after step 7,038 the run
recompiles for seq 512 / 80 predictions / batch 32,768 and reads the 512 ones. The
learning rate follows one warmup/decay schedule over all 8,599 steps: phase 2 starts at about
0.24x the 6e-3 peak, where the recipe warms up again to 4e-3. That second warmup is not built,
so phase 2 is not yet exactly the paper's.
"""

import ml_collections

from bert_jax.config import files

# configs/large.py, next to this file (found from any directory).
large = files.sibling(__file__, "large")


def get_config() -> ml_collections.ConfigDict:
  # Already base.py's, as the recipe has them: seq 128 with 20 predictions, weight decay 0.01,
  # Adam's betas 0.9 / 0.999 and epsilon 1e-6, gradients clipped to norm 1.
  config = large.get_config()
  config.train.optimizer = "lamb"
  # LAMB as NVIDIA's and MLPerf's BERT run it: bias-corrected moments (bert_jax/runtime/
  # optim.py); the schedule stays the original's, decay counted from step 0.
  config.train.adam_bias_correction = True
  config.train.batch_size = 65536
  config.train.num_train_steps = 8599
  config.train.phase2_start_step = 7038
  config.train.phase2_batch_size = 32768
  config.train.learning_rate = 6e-3
  config.train.num_warmup_steps = 2000
  # A short run of huge steps: log, evaluate and checkpoint more often than base.py.
  config.train.log_every_steps = 10
  config.train.eval_every_steps = 500
  config.train.checkpoint_every_steps = 500
  return config
