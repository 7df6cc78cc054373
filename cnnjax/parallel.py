"""Device mesh, shardings and the multi-host runtime (jax.distributed).

One mesh axis, 'data', over all devices of all processes: batches are sharded on it, the train state is
replicated. Since the train step is one jit over global arrays, batch-norm statistics are global-batch
statistics, and a run on 8 devices computes what a run on 1 does.
"""
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def mesh() -> Mesh:
  return Mesh(np.asarray(jax.devices()), ("data",))


def replicated(m: Mesh) -> NamedSharding:
  return NamedSharding(m, P())


def batch_sharded(m: Mesh) -> NamedSharding:
  return NamedSharding(m, P("data"))


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
  path = os.path.abspath(os.path.expanduser(path))
  os.makedirs(path, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
