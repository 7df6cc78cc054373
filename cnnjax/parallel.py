"""Device mesh, shardings and the multi-host runtime (jax.distributed).

One mesh axis, 'data', over all devices of all processes: batches are sharded on it, the train state is
replicated. Since the train step is one jit over global arrays, batch-norm statistics are global-batch
statistics, and a run on 8 devices computes what a run on 1 does.
"""
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
