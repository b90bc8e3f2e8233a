from bert_jax.runtime import train_state
"""One process of tests/test_distributed.py: 3 train steps of a small BERT on a fixed batch.

    python tests/distributed_worker.py OUT.npz NUM_PROCESSES PROCESS_ID [COORDINATOR_PORT]

The mesh is (data=2, fsdp=2, tensor=2) over all 8 devices of all processes. Each process feeds
only the rows of the fixed global batch that its devices hold; process 0 gathers the losses,
metrics and updated params and writes them to OUT.npz. With one process (8 local devices) the
same script gives the reference result.
"""

import os
import sys

import jax
from jax.experimental import multihost_utils
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # test_train's helpers.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # bert_jax.

GLOBAL_BATCH = 16
NUM_STEPS = 3


def global_batch(seed: int = 0) -> dict[str, np.ndarray]:
  """Realistic pre-training rows: varied lengths, padding, a few masked positions each."""
  rng = np.random.default_rng(seed)
  length, predictions, vocab = 32, 5, 128
  batch = {name: np.zeros((GLOBAL_BATCH, length), np.int32)
           for name in ("input_ids", "input_mask", "segment_ids")}
  batch.update({name: np.zeros((GLOBAL_BATCH, predictions), np.int32)
                for name in ("masked_lm_positions", "masked_lm_ids")})
  batch["masked_lm_weights"] = np.zeros((GLOBAL_BATCH, predictions), np.float32)
  batch["next_sentence_labels"] = rng.integers(0, 2, GLOBAL_BATCH).astype(np.int32)
  for row in range(GLOBAL_BATCH):
    real = int(rng.integers(12, length + 1))
    length_a = int(rng.integers(3, real - 4))
    batch["input_ids"][row, :real] = rng.integers(5, vocab, real)
    batch["input_ids"][row, [0, length_a + 1, real - 1]] = [2, 3, 3]  # [CLS] A [SEP] B [SEP]
    batch["input_mask"][row, :real] = 1
    batch["segment_ids"][row, length_a + 2:real] = 1
    num_masked = int(rng.integers(1, predictions + 1))
    candidates = [p for p in range(1, real - 1) if p != length_a + 1]
    positions = np.sort(rng.choice(candidates, num_masked, replace=False))
    batch["masked_lm_positions"][row, :num_masked] = positions
    batch["masked_lm_ids"][row, :num_masked] = batch["input_ids"][row, positions]
    batch["masked_lm_weights"][row, :num_masked] = 1.0
    batch["input_ids"][row, positions] = 4  # [MASK]
  return batch


def local_rows(sharding: jax.sharding.Sharding, num_rows: int) -> np.ndarray:
  """The global row numbers this process's devices hold, in order."""
  rows = set()
  for index in sharding.addressable_devices_indices_map((num_rows,)).values():
    rows.update(range(num_rows)[index[0]])
  return np.array(sorted(rows))


def main(out_file: str, num_processes: int, process_id: int, port: int | None) -> None:
  if num_processes > 1:
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}",
                               num_processes=num_processes, process_id=process_id)
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from bert_jax.runtime import sharding  # pylint: disable=g-import-not-at-top
  from bert_jax.pretraining import train_program  # pylint: disable=g-import-not-at-top
  from test_train import small_config  # pylint: disable=g-import-not-at-top

  assert jax.device_count() == 8 and jax.process_count() == num_processes
  config = small_config("")
  assert config.model.hidden_dropout_prob > 0  # Dropout makes each row's place matter.
  config.mesh.update(data=2, fsdp=2, tensor=2)
  config.train.batch_size = GLOBAL_BATCH
  mesh = sharding.create_mesh(config.mesh)
  rules = sharding.logical_axis_rules(config)
  batch = global_batch()

  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    program = train_program.build_program(config, mesh, rules, next_sentence_prediction=True)
    rows = local_rows(program.batch_sharding, GLOBAL_BATCH)
    if num_processes > 1:
      assert len(rows) == GLOBAL_BATCH // num_processes, rows

    shapes = train_program.dummy_batch(1, 32, 5)
    init = jax.jit(
        lambda rng: train_state.create_train_state(rng, program.model, program.tx, shapes),
        out_shardings=program.state_shardings)
    fresh_state = lambda: init(jax.random.key(config.seed))

    def feed(row_numbers):
      local = {name: value[row_numbers] for name, value in batch.items()}
      return jax.make_array_from_process_local_data(program.batch_sharding, local)

    dropout_rng = jax.random.key(1)
    state = fresh_state()
    fed = feed(rows)
    gathered = multihost_utils.process_allgather(fed, tiled=True)
    step_metrics = []
    for _ in range(NUM_STEPS):
      state, metrics = program.train_step(state, fed, dropout_rng)
      step_metrics.append(jax.device_get(metrics))  # Replicated: every process holds them.
    params = multihost_utils.process_allgather(state.params, tiled=True)

    # The same first step with the rows of the other process (or, alone, the two halves
    # swapped): a test that could not tell the rows apart would prove nothing.
    wrong_rows = np.roll(np.arange(GLOBAL_BATCH), GLOBAL_BATCH // 2)[rows]
    _, wrong_metrics = program.train_step(fresh_state(), feed(wrong_rows), dropout_rng)

  if jax.process_index() == 0:
    result = {f"batch/{name}": value for name, value in gathered.items()}
    for step, metrics in enumerate(step_metrics):
      result.update({f"step{step}/{name}": value for name, value in metrics.items()})
    result["wrong_rows_loss"] = jax.device_get(wrong_metrics["loss"])
    flat, _ = jax.tree_util.tree_flatten_with_path(params)
    result.update({f"params/{jax.tree_util.keystr(path)}": value for path, value in flat})
    np.savez(out_file, **result)


if __name__ == "__main__":
  main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]),
       int(sys.argv[4]) if len(sys.argv) > 4 else None)
