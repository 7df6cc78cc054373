"""Device mesh, shardings, the multi-host runtime (jax.distributed) and the compilation cache.

One mesh axis, 'data', over all devices of all processes: batches are sharded on it; the train state is
replicated, or with `parallel.shard_params` (FSDP-style) each parameter and optimizer-state array is split over
'data' along its largest divisible axis, XLA gathering what each step needs. Since the train step is one jit
over global arrays, batch-norm statistics are global-batch statistics, and a run on 8 devices computes what a
run on 1 does.
"""
import logging
import os
import sys
import threading

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

log = logging.getLogger("cnnjax")


def initialize(config) -> None:
  """Starts jax.distributed when the config or the environment asks for several processes.

  `distributed.coordinator_address` set: an explicit cluster (e.g. CPU hosts), with `num_processes` and
  `process_id`. Otherwise, on a TPU VM pod slice or a SLURM / Open MPI / Kubernetes GPU cluster, JAX detects
  the cluster itself (`jax.distributed.initialize()` without arguments). Otherwise: one process.
  If a peer does not join within `distributed.initialization_timeout` seconds, a watchdog ends this process
  with a message naming the coordinator, instead of XLA's abort.
  """
  d = config.distributed
  explicit = bool(d.coordinator_address)
  detected = any(v in os.environ for v in ("SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES",
                                            "MEGASCALE_COORDINATOR_ADDRESS", "JAX_COORDINATOR_ADDRESS"))
  if not (explicit or detected) or jax.distributed.is_initialized():
    return
  kwargs = {}
  if explicit:
    kwargs = dict(coordinator_address=d.coordinator_address, num_processes=d.num_processes,
                  process_id=d.process_id)
  timeout = int(d.initialization_timeout)
  where = d.coordinator_address or "the auto-detected coordinator"

  def give_up():
    sys.stderr.write(f"FATAL: jax.distributed did not start within {timeout} s: not every one of the "
                     f"{d.num_processes if explicit else 'expected'} processes reached {where}. Start all "
                     f"processes (same coordinator address, distinct process_id 0..num_processes-1).\n")
    sys.stderr.flush()
    os._exit(3)

  watchdog = threading.Timer(max(1, timeout - 2), give_up)
  watchdog.daemon = True
  watchdog.start()
  try:
    jax.distributed.initialize(initialization_timeout=timeout, **kwargs)
  finally:
    watchdog.cancel()
  log.info("jax.distributed: process %d of %d, %d local / %d global devices", jax.process_index(),
           jax.process_count(), jax.local_device_count(), jax.device_count())


def mesh() -> Mesh:
  return Mesh(np.asarray(jax.devices()), ("data",))


def replicated(m: Mesh) -> NamedSharding:
  return NamedSharding(m, P())


def batch_sharded(m: Mesh) -> NamedSharding:
  return NamedSharding(m, P("data"))


def state_shardings(abstract_state, m: Mesh, shard_params: bool, min_size: int = 2 ** 14):
  """Shardings for the train state: replicated, or (FSDP) every array of at least `min_size` elements split
  over 'data' on its largest axis that the device count divides; small or indivisible arrays stay replicated."""
  n = m.shape["data"]

  def spec(x):
    if not shard_params or x.ndim == 0 or x.size < min_size:
      return NamedSharding(m, P())
    for axis in sorted(range(x.ndim), key=lambda a: -x.shape[a]):
      if x.shape[axis] % n == 0:
        return NamedSharding(m, P(*([None] * axis + ["data"])))
    return NamedSharding(m, P())
  return jax.tree.map(spec, abstract_state)


def describe(shardings) -> str:
  """'k of n arrays sharded over data' for a tree of shardings (for the log)."""
  leaves = jax.tree.leaves(shardings)
  k = sum(1 for s in leaves if any(a is not None for a in s.spec))
  return f"{k} of {len(leaves)} state arrays sharded over 'data'"


def global_batch(local_batch, sharding: NamedSharding):
  """This process's numpy batch (a dict of arrays) -> global jax.Arrays sharded on the batch axis."""
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch)


def enable_compilation_cache(path: str) -> None:
  """Turns on JAX's persistent compilation cache in `path` ('' leaves it off).

  Every compiled program is cached (no minimum compile time), so a restarted or resumed run, and every
  process of a multi-host job after the first start, skips XLA compilation.
  """
  if not path:
    return
  if "://" not in path:  # a bucket URL is used as it is
    path = os.path.abspath(os.path.expanduser(path))
    os.makedirs(path, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
