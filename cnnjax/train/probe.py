"""Linear probe: a network's last linear layer fitted on the frozen features of the training set, as in
Kornblith et al., "Do Better ImageNet Models Transfer Better?" (CVPR 2019, Sec. 3: L-BFGS multinomial logistic
regression on the penultimate layer's features).

`linear_probe.enabled`: after the init (`init.checkpoint`, `init.dont_load`), the inputs of the top-level
module `linear_probe.head` (a Dense layer) are computed once for every training example with the evaluation
preprocessing (no augmentation), and the head is set to the minimiser of

    mean cross-entropy + l2 / 2 * ||kernel||^2        (the bias is not penalised)

found by full-batch L-BFGS (optax.lbfgs): scikit-learn's LogisticRegression(C=1 / (l2 * n)) for n examples.
Everything else keeps its value. The run then takes no training step: its step-0 checkpoint holds the fitted
head, and the final evaluation, a resume and --mode=eval work as for any run.
"""
import logging

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from cnnjax import data
from cnnjax.errors import ConfigError
from cnnjax.train import steps

log = logging.getLogger("cnnjax")


def head_inputs(model, variables, batches, head: str, prep=lambda batch: batch):
  """(features (n, d) float32, labels (n,)): the input of the top-level module `head` in evaluation mode, for
  every unmasked example of `batches` (after `prep`, data.on_device)."""

  def features(variables, x):
    seen = []

    def grab(next_fun, args, kwargs, context):
      if context.method_name == "__call__" and context.module.path == (head,):
        seen.append(args[0])
      return next_fun(*args, **kwargs)
    with nn.intercept_methods(grab):
      model.apply(variables, x, train=False)
    return seen[0].astype(jnp.float32)

  f = jax.jit(lambda variables, batch: features(variables, steps.model_input(prep(batch))))
  xs, ys = [], []
  for batch in batches:
    keep = np.asarray(batch["mask"])
    xs.append(np.asarray(f(variables, batch))[keep])
    ys.append(np.asarray(batch["label"])[keep])
  return np.concatenate(xs), np.concatenate(ys)


def fit_head(features, labels, num_classes: int, l2: float, max_iters: int, tol: float):
  """({'kernel': (d, k), 'bias': (k,)}, iterations): L-BFGS on the objective of the module docstring, from
  zeros, until the gradient's l2 norm is below `tol` or after `max_iters` iterations."""
  x, y = jnp.asarray(features, jnp.float32), jax.nn.one_hot(jnp.asarray(labels), num_classes)

  def loss(p):
    logits = x @ p["kernel"] + p["bias"]
    return jnp.mean(optax.softmax_cross_entropy(logits, y)) + 0.5 * l2 * jnp.sum(jnp.square(p["kernel"]))

  opt = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(loss)

  def step(carry):
    p, s = carry
    value, grad = value_and_grad(p, state=s)
    updates, s = opt.update(grad, s, p, value=value, grad=grad, value_fn=loss)
    return optax.apply_updates(p, updates), s

  def going(carry):
    s = carry[1]
    count = optax.tree_utils.tree_get(s, "count")
    grad_norm = optax.tree_utils.tree_l2_norm(optax.tree_utils.tree_get(s, "grad"))
    return (count == 0) | ((count < max_iters) & (grad_norm >= tol))

  init = {"kernel": jnp.zeros((x.shape[1], num_classes)), "bias": jnp.zeros((num_classes,))}
  p, s = jax.jit(lambda p: jax.lax.while_loop(going, step, (p, opt.init(p))))(init)
  return p, int(optax.tree_utils.tree_get(s, "count"))


def check(p) -> None:
  """Raises ConfigError for values of `config.linear_probe` that cannot fit (config.validate calls it)."""
  if not (p.l2 >= 0 and p.max_iters >= 1 and p.tol > 0):
    raise ConfigError(f"config.linear_probe (l2={p.l2!r}, max_iters={p.max_iters!r}, tol={p.tol!r}) is invalid: "
                      "l2 >= 0, max_iters >= 1, tol > 0")


def fit(config, state, model, train_src, info):
  """`state` with the head `config.linear_probe.head` fitted on the features of `train_src`."""
  p = config.linear_probe
  check(p)
  head = state.params.get(p.head)
  if head is None or set(head) != {"kernel", "bias"}:
    raise ConfigError(f"config.linear_probe.head={p.head!r} is not a top-level Dense layer of "
                      f"{config.model.name!r}; its top-level modules: {sorted(state.params)}")
  if jax.process_count() > 1:
    raise ConfigError("config.linear_probe.enabled runs in one process")
  x, y = head_inputs(model, {"params": state.params, "batch_stats": state.batch_stats},
                     data.eval_dataset(config, train_src, info), p.head, data.on_device(config, info))
  fitted, iters = fit_head(x, y, head["kernel"].shape[1], p.l2, p.max_iters, p.tol)
  top1 = float(np.mean(np.argmax(x @ np.asarray(fitted["kernel"]) + np.asarray(fitted["bias"]), -1) == y))
  log.info("linear probe: %d examples x %d features, %d L-BFGS iterations, training top-1 %.4f", len(y),
           x.shape[1], iters, top1)
  return state.replace(params={**state.params, p.head: fitted})
