"""Optimizer and learning-rate schedule from the config, with Optax.

Schedules are given in epochs in the config and converted to steps here: 'constant', 'cosine' (to 0 at the
last step), 'step' (multiply by `lr_decay_factor` at each of `lr_boundaries_epochs`); all with a linear warmup
over `warmup_epochs`. Weight decay is L2 added to the gradient for SGD (as in the ResNet paper) and decoupled
for AdamW; `weight_decay_norm_and_bias=False` exempts every parameter of rank < 2 (norm scales and offsets,
biases). Adadelta (Zeiler 2012) takes `adadelta_rho` and `adadelta_eps` (Kim 2014: 0.95, 1e-6, learning rate 1).
`max_norm > 0` adds the l2 max-norm constraint on the columns of the kernels matching `max_norm_pattern`
(Hinton et al. 2012; Kim 2014 Sec. 3.1: s = 3 on the output layer), applied after each update.
"""
import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

from cnnjax import param_paths
from cnnjax.errors import ConfigError
from cnnjax.train import transfer

OPTIMIZERS = ("sgd", "adamw", "adadelta")
SCHEDULES = ("constant", "cosine", "step")


def learning_rate_schedule(config, steps_per_epoch: int, total_steps: int) -> optax.Schedule:
  base = config.learning_rate
  warmup = int(round(config.warmup_epochs * steps_per_epoch))
  if config.lr_schedule == "constant":
    main = optax.constant_schedule(base)
  elif config.lr_schedule == "cosine":
    main = optax.cosine_decay_schedule(base, max(1, total_steps - warmup))
  elif config.lr_schedule == "step":
    bounds = {int(round(e * steps_per_epoch)) - warmup: config.lr_decay_factor for e in config.lr_boundaries_epochs}
    main = optax.piecewise_constant_schedule(base, bounds)
  else:
    raise ConfigError(f"config.lr_schedule={config.lr_schedule!r} is invalid: one of {SCHEDULES}")
  if warmup <= 0:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, base, warmup), main], [warmup])


def decay_mask(params):
  """True for the parameters weight decay applies to: kernels (rank >= 2), not norm scales or biases."""
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def max_norm(s: float, pattern: str) -> optax.GradientTransformation:
  """Rescales the updates of every parameter whose '/'-joined path `pattern` selects (param_paths.matches) so that each
  column (axis 0 summed: one output unit's incoming weights) of params + updates has l2 norm <= s; a column
  within the bound is left as the update made it. Put it last in a chain: it needs the params."""

  def constrain(path, p, u):
    if not param_paths.matches(pattern, path):
      return u
    new = p + u
    norm = jnp.sqrt(jnp.sum(jnp.square(new), axis=0, keepdims=True))
    scale = jnp.where(norm > s, s / jnp.maximum(norm, 1e-30), 1.0)
    return new * scale - p

  def update(updates, state, params=None):
    if params is None:
      raise ValueError("max_norm needs the params: call update(updates, state, params)")
    flat_u, flat_p = param_paths.flatten(updates), param_paths.flatten(params)
    if not any(param_paths.matches(pattern, k) for k in flat_u):
      raise ConfigError(f"config.max_norm_pattern={pattern!r} matches no parameter; parameters: {sorted(flat_u)}")
    out = {k: constrain(k, flat_p[k], u) for k, u in flat_u.items()}
    return traverse_util.unflatten_dict(out, sep="/"), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def build(config, steps_per_epoch: int, total_steps: int):
  """Returns (optax transformation, schedule)."""
  schedule = learning_rate_schedule(config, steps_per_epoch, total_steps)
  mask = None if config.weight_decay_norm_and_bias else decay_mask
  parts = []
  if config.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(config.grad_clip_norm))
  if config.optimizer == "sgd":
    if config.weight_decay > 0:
      parts.append(optax.add_decayed_weights(config.weight_decay, mask=mask))
    parts.append(optax.sgd(schedule, momentum=config.momentum or None, nesterov=config.nesterov))
  elif config.optimizer == "adamw":
    parts.append(optax.adamw(schedule, b1=config.adam_b1, b2=config.adam_b2, weight_decay=config.weight_decay,
                             mask=mask))
  elif config.optimizer == "adadelta":
    if config.weight_decay > 0:
      parts.append(optax.add_decayed_weights(config.weight_decay, mask=mask))
    parts.append(optax.adadelta(schedule, rho=config.adadelta_rho, eps=config.adadelta_eps))
  else:
    raise ConfigError(f"config.optimizer={config.optimizer!r} is invalid: one of {OPTIMIZERS}")
  if config.max_norm > 0:
    parts.append(max_norm(config.max_norm, config.max_norm_pattern))
  return transfer.wrap_optimizer(optax.chain(*parts), config), schedule


def updates_applied(opt_state, default):
  """How many updates the optimizer has applied: the count of its learning-rate schedule. It stops when a
  non-finite step is skipped (the optimizer state is kept), while TrainState.step goes on, so this, not the
  train step, is where the schedule stands. `default` for an optimizer with a constant rate (no count)."""
  is_sched = lambda x: isinstance(x, optax.ScaleByScheduleState)
  counts = [x.count for x in jax.tree.leaves(opt_state, is_leaf=is_sched) if is_sched(x)]
  return counts[0] if counts else default
