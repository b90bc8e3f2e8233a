"""Joins the processes of a multi-host job into one JAX system, before the backend starts.

Three cases, decided from flags and the environment only (nothing here may touch the JAX
backend: `jax.distributed.initialize` refuses to run after it):
- explicit: --coordinator_address, --num_processes and --process_id (GPU clusters, local runs);
- detected: a cluster that `jax.distributed.initialize()` configures by itself (a Cloud TPU
  slice, a SLURM job step or an Open MPI job of more than one task);
- neither: one process, nothing to do.
"""

import contextlib
import os
import sys
import threading
from collections.abc import Iterator

import jax

from bert_jax import errors
from bert_jax.runtime import process_watch

# jax's own defaults for the two.
DEFAULT_INITIALIZATION_TIMEOUT_SECONDS = 300
DEFAULT_HEARTBEAT_TIMEOUT_SECONDS = 100
# jax's own join timeout is set this much later than ours: it ends the process with a C++ fatal
# error and a crash dump, and ours ends it with one line first.
_JAX_JOIN_MARGIN_SECONDS = 60

# Set by SLURM's srun in every task of a job step; jax reads the same ones.
_SLURM_VARIABLES = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
                    "SLURM_LOCALID")


def _on_cloud_tpu_vm() -> bool:
  # Set by jax's own import-time TPU probe (TPU chips on the PCI bus and libtpu), which reads
  # no backend. Private, so read defensively: an unknown jax means "not a TPU VM".
  try:
    from jax._src import cloud_tpu_init  # pylint: disable=g-import-not-at-top
  except ImportError:
    return False
  return bool(getattr(cloud_tpu_init, "running_in_cloud_tpu_vm", False))


def detect_cluster() -> str | None:
  """Names the multi-process environment jax can configure itself, or None.

  Mirrors jax 0.12's cluster detection (jax/_src/clusters/) without its network queries. A
  Cloud TPU VM counts even when it is a single host: jax then finds a slice of one process,
  which costs nothing. SLURM and Open MPI count only with more than one task, so a plain
  `srun python ...` or `mpirun -n 1` stays a single process. Kubernetes other than GKE TPUs and
  mpi4py are left to the explicit flags: detecting them needs extra packages.
  """
  if _on_cloud_tpu_vm():
    # jax 0.12 also reads the addresses from a file named by TPU_PROCESS_ADDRESSES_PATH.
    gke = any(name in os.environ for name in ("TPU_PROCESS_ADDRESSES_PATH",
                                              "TPU_PROCESS_ADDRESSES", "TPU_WORKER_HOSTNAMES"))
    # Without GKE's variables jax asks the GCE metadata server, which TPU_SKIP_MDS_QUERY turns
    # off; then jax finds no cluster and neither do we.
    if gke or "TPU_SKIP_MDS_QUERY" not in os.environ:
      return "Cloud TPU"
  if all(name in os.environ for name in _SLURM_VARIABLES):
    if _task_count("SLURM_NTASKS") > 1:
      return "SLURM"
  # ORTE-based Open MPI (< 5) only: jax 0.12 sends Open MPI 5 jobs to mpi4py, as we do (flags).
  if "OMPI_MCA_orte_hnp_uri" in os.environ and _task_count("OMPI_COMM_WORLD_SIZE") > 1:
    return "Open MPI"
  return None


def _task_count(variable: str) -> int:
  try:
    return int(os.environ.get(variable, "1"))
  except ValueError:
    return 1


def _check_flags(coordinator_address: str | None, num_processes: int | None,
                 process_id: int | None, timeouts: dict[str, int]) -> None:
  for name, seconds in timeouts.items():
    if seconds < 1:
      raise errors.UserError(f"--{name}={seconds}: must be at least 1 (seconds)")
  given = {"--coordinator_address": coordinator_address is not None,
           "--num_processes": num_processes is not None, "--process_id": process_id is not None}
  if any(given.values()) and not all(given.values()):
    missing = ", ".join(name for name, present in given.items() if not present)
    raise errors.UserError(
        f"{missing} not given: pass all of --coordinator_address, --num_processes and "
        f"--process_id, or none (single process, or a cluster jax detects)")
  if not any(given.values()):
    return
  if not coordinator_address or ":" not in coordinator_address:
    raise errors.UserError(f"--coordinator_address={coordinator_address!r}: need HOST:PORT of "
                           f"process 0, the same on every process")
  if num_processes < 1:
    raise errors.UserError(f"--num_processes={num_processes}: must be at least 1")
  if not 0 <= process_id < num_processes:
    raise errors.UserError(f"--process_id={process_id}: must be in [0, {num_processes})")


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None,
               initialization_timeout_seconds: int = DEFAULT_INITIALIZATION_TIMEOUT_SECONDS,
               heartbeat_timeout_seconds: int = DEFAULT_HEARTBEAT_TIMEOUT_SECONDS,
               checkpoint_dir: str | None = None) -> None:
  """Calls `jax.distributed.initialize` when the job spans processes; else does nothing.

  Must run before anything touches the JAX backend (even `jax.devices()`). Prints one line
  saying which process this is when there is more than one. From then on a lost process ends
  the others with one line (runtime/process_watch.py), and `finish` ends the command.

  Args:
    coordinator_address: HOST:PORT where process 0 serves the coordination service.
    num_processes: Processes in the job.
    process_id: This process, in [0, num_processes).
    initialization_timeout_seconds: How long to wait for every process to join; then this
      process ends with one line, status 1.
    heartbeat_timeout_seconds: After this long without a heartbeat, jax's coordination service
      takes a process for lost (one killed outright is seen at once).
    checkpoint_dir: The command's checkpoints, named by the line a lost process gives.

  Raises:
    errors.UserError: Some but not all of the three are given, or one is out of range.
  """
  _check_flags(coordinator_address, num_processes, process_id,
               {"initialization_timeout_seconds": initialization_timeout_seconds,
                "heartbeat_timeout_seconds": heartbeat_timeout_seconds})
  if coordinator_address is not None:
    if num_processes == 1:
      return  # A job of one process needs no coordinator.
    source = f"coordinator {coordinator_address}"
    where = f"--coordinator_address={coordinator_address}"
  else:
    source = detect_cluster()
    if source is None:
      return
    where = f"the {source} cluster's coordinator (found by jax)"
  # A lost process must not end the others with jax's fatal error: they end with a line instead
  # (runtime/process_watch.py). Set before initialize, which hands it to the service. Only
  # where the environment has not chosen (JAX_ENABLE_RECOVERABILITY=false keeps jax's abort).
  if "JAX_ENABLE_RECOVERABILITY" not in os.environ:
    jax.config.update("jax_enable_recoverability", True)
  with _join_deadline(where, num_processes, process_id, initialization_timeout_seconds):
    jax.distributed.initialize(
        coordinator_address=coordinator_address, num_processes=num_processes,
        process_id=process_id,
        initialization_timeout=initialization_timeout_seconds + _JAX_JOIN_MARGIN_SECONDS,
        heartbeat_timeout_seconds=heartbeat_timeout_seconds)
  if jax.process_count() > 1 and jax.config.jax_enable_recoverability:
    process_watch.start(checkpoint_dir, heartbeat_timeout_seconds)
    print(f"Process {jax.process_index()} of {jax.process_count()} ({source}; "
          f"{jax.local_device_count()} local, {jax.device_count()} global devices)", flush=True)


@contextlib.contextmanager
def _join_deadline(where: str, num_processes: int | None, process_id: int | None,
                   seconds: int) -> Iterator[None]:
  """Ends this process with one line if the block (joining the job) takes over `seconds`.

  jax's coordination service keeps to itself how many processes have joined before the job is
  whole, so the line says which process this is and how many the job expects.
  """
  expected = f"{num_processes} processes" if num_processes else "every process"
  this = f"process {process_id}" if process_id is not None else "this process"

  def give_up() -> None:
    print(f"bert_jax: error: {where}: the job did not form within {seconds} s "
          f"(--initialization_timeout_seconds): {this} waited for all {expected} to join. "
          f"Start the same command on every process (each with its own --process_id), with "
          f"process 0 listening at that address.", file=sys.stderr, flush=True)
    os._exit(1)  # pylint: disable=protected-access

  timer = threading.Timer(seconds, give_up)
  timer.daemon = True
  timer.start()
  try:
    yield
  finally:
    timer.cancel()


def finish(timeout_seconds: int = 600) -> None:
  """Ends a multi-process command in step with the others (process_watch.finish); waits at
  most `timeout_seconds` for them. Nothing to do for a single process."""
  process_watch.finish(timeout_seconds)


def await_lost_process() -> None:
  """After a collective failed: returns only if no process was lost (the watch ends this
  process with its line if one was)."""
  process_watch.await_verdict()
