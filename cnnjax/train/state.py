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


@flax.struct.dataclass
class EmaTrainState(TrainState):
  """A TrainState that also carries the exponential moving average of the weights (config.ema.decay > 0).

  A subclass rather than an optional field, so that a run without EMA keeps the exact state and checkpoint
  layout of before (Orbax refuses to restore a checkpoint into a template with an extra, even empty, field)."""
  ema: Any = None          # {'params': ..., 'batch_stats': ...}: the averages, same tree as the raw ones


def ema_variables(state) -> dict:
  """{'params', 'batch_stats'} of the state's moving average (the raw weights for a state without one)."""
  if isinstance(state, EmaTrainState):
    return state.ema
  return {"params": state.params, "batch_stats": state.batch_stats}


def reset_ema(state):
  """The state with its moving average set to its current weights (after an init or a probe changed them); a
  state without EMA is returned unchanged."""
  if not isinstance(state, EmaTrainState):
    return state
  copy = lambda tree: jax.tree.map(jnp.copy, tree)  # own buffers: the train step donates the whole state
  return state.replace(ema={"params": copy(state.params), "batch_stats": copy(state.batch_stats)})


def create(rng: jax.Array, model, tx, input_shape, input_dtype="float32", ema: bool = False) -> TrainState:
  """Initialises the model on a zero batch of `input_shape` (without the batch axis) and `input_dtype`
  (int32 for token ids: `DatasetInfo.input_shape` / `input_dtype`), and the optimizer. `ema`: an EmaTrainState
  whose average starts at the initial weights."""
  init_rng, state_rng = jax.random.split(rng)
  variables = init_variables(model, input_shape, init_rng, dtype=input_dtype)
  params = variables["params"]
  fields = dict(step=jnp.zeros((), jnp.int32), params=params, batch_stats=variables.get("batch_stats", {}),
                opt_state=tx.init(params), rng=state_rng)
  if ema:
    return EmaTrainState(**fields, ema={"params": params, "batch_stats": fields["batch_stats"]})
  return TrainState(**fields)
