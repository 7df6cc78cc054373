"""The train state: plain data (a pytree), so it can be donated, sharded and checkpointed as is."""
from typing import Any

import flax
import jax
import jax.numpy as jnp

from cnnjax.models import init_variables


@flax.struct.dataclass
class TrainState:
  step: jax.Array          # int32 scalar: number of updates applied
  params: Any
  batch_stats: Any         # {} for models without batch norm
  opt_state: Any
  rng: jax.Array           # uint32[2] raw key; per-step keys are fold_in(rng, step)


def create(rng: jax.Array, model, tx, input_shape, input_dtype="float32") -> TrainState:
  """Initialises the model on a zero batch of `input_shape` (without the batch axis) and `input_dtype`
  (int32 for token ids: `DatasetInfo.input_shape` / `input_dtype`), and the optimizer."""
  init_rng, state_rng = jax.random.split(rng)
  variables = init_variables(model, input_shape, init_rng, dtype=input_dtype)
  params = variables["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=variables.get("batch_stats", {}),
                    opt_state=tx.init(params), rng=state_rng)
