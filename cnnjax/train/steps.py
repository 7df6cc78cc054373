"""Pure train and eval steps, and the metrics they return as sums (exact under padding and sharding)."""
from typing import Any, Dict

import jax
import jax.numpy as jnp
import optax

from cnnjax import layers
from cnnjax.train import mix as mix_lib, optim, transfer
from cnnjax.train import state as state_lib
from cnnjax.train.state import TrainState

_MIX_STREAM = 0x6D6978  # fold_in of the step's key for the mixing draws: apart from dropout's (the key, fold_in j)


def cross_entropy(logits, labels, label_smoothing: float = 0.0):
  """Per-example softmax cross-entropy with integer labels, computed in float32."""
  logits = logits.astype(jnp.float32)
  targets = jax.nn.one_hot(labels, logits.shape[-1])
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits, targets)


def topk_correct(logits, labels, k: int):
  """1.0 where the label is among the top k, else 0.0, counting ties against the prediction.

  The label is correct at k when fewer than k *other* classes have a logit >= the label's logit. A model that
  outputs equal logits for all classes therefore scores 0, not 100%; a row with a NaN or Inf logit is wrong.
  """
  label_logit = jnp.take_along_axis(logits, labels[:, None], axis=-1)
  others_ge = jnp.sum(logits >= label_logit, axis=-1) - 1
  finite = jnp.all(jnp.isfinite(logits), axis=-1)
  return ((others_ge < k) & finite).astype(jnp.float32)


def soft_cross_entropy(logits, targets):
  """Per-example softmax cross-entropy with probability targets (mixed labels), computed in float32."""
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def metric_sums(logits, labels, mask, label_smoothing=0.0, targets=None) -> Dict[str, jax.Array]:
  """Sums over the unmasked examples of loss and top-1/top-5 correctness, and their count. `targets`
  (probabilities, smoothing included) replace the labels in the loss: top-1/top-5 stay counted on `labels`."""
  mask = mask.astype(jnp.float32)
  loss = cross_entropy(logits, labels, label_smoothing) if targets is None else soft_cross_entropy(logits, targets)
  return {
      "loss": jnp.sum(loss * mask),
      "top1": jnp.sum(topk_correct(logits, labels, 1) * mask),
      "top5": jnp.sum(topk_correct(logits, labels, min(5, logits.shape[-1])) * mask),
      "count": jnp.sum(mask),
  }


def model_input(batch):
  """The model's input in a batch: 'image' (images), or 'tokens' (text token ids)."""
  return batch["tokens"] if "tokens" in batch else batch["image"]


def split_outputs(out):
  """Models return logits, or (logits, aux_logits_tuple) in training (GoogLeNet's auxiliary classifiers)."""
  if isinstance(out, tuple):
    return out[0], tuple(out[1])
  return out, ()


def make_train_step(model, tx, schedule, *, label_smoothing: float = 0.0, aux_loss_weight: float = 0.3,
                    grad_accum_steps: int = 1, frozen: str = "", mixup_alpha: float = 0.0,
                    cutmix_alpha: float = 0.0, mix_prob: float = 1.0, mix_switch_prob: float = 0.5,
                    ema_decay: float = 0.0, ema_start_step: int = 0):
  """Builds `train_step(state, batch) -> (state, metrics)`; metrics are sums (see `metric_sums`).

  `grad_accum_steps=k` splits the batch into k microbatches (microbatch j holds examples j, j+k, j+2k, ...),
  averages their gradients and applies one update: the same update as the whole batch for models without
  batch norm. With batch norm each microbatch is normalised with its own statistics ("ghost" batch norm) and
  the running averages are updated once per microbatch, in order.

  An update whose loss or gradients are not finite is not applied (parameters, batch statistics, their moving
  average and optimizer state keep their values; the step counter advances); `nonfinite_loss` /
  `nonfinite_grads` in the metrics say so, and the loop decides to stop or go on (config.on_nonfinite). So no
  state holding NaN or Inf is ever produced, let alone checkpointed.

  `frozen` (config.frozen, a regex over parameter paths): the gradient is taken only with respect to the other
  parameters, so XLA computes no weight gradient for frozen layers and no backward pass below the lowest
  trainable one (the frozen leaves get zeros, which `tx` must ignore: transfer.wrap_optimizer); batch norms
  whose parameters are all frozen run with their running statistics (layers.frozen_statistics). The logged
  `grad_norm` is then the trainable parameters'.

  `mixup_alpha` / `cutmix_alpha` > 0 mix each batch before the forward pass (cnnjax.train.mix; draws from
  fold_in(fold_in(state.rng, step), _MIX_STREAM)); the loss is then the cross-entropy with the mixed (and
  smoothed) targets, and the train top-1/top-5 are counted against each example's dominant label (the one
  of weight >= 1/2).

  `ema_decay` > 0 (the state is an EmaTrainState): after each applied update, the moving average of the
  parameters and the batch-norm statistics becomes decay * average + (1 - decay) * new values (optax's
  incremental_update); before update `ema_start_step` (0-based: the update the step counter shows before it) the
  average is set to the new values, so it starts from the weights trained so far.
  """
  mixing = mixup_alpha > 0 or cutmix_alpha > 0

  def grads_and_stats(params, batch_stats, images, labels, rolled, lam, rng):
    trainable, fixed = transfer.partition(params, frozen)

    def loss_fn(trainable):
      variables = {"params": transfer.merge(trainable, fixed), "batch_stats": batch_stats}
      with layers.frozen_statistics(frozen):
        out, new_vars = model.apply(variables, images, train=True, mutable=["batch_stats"],
                                    rngs={"dropout": rng})
      logits, aux = split_outputs(out)
      if mixing:
        targets = mix_lib.soft_targets(labels, rolled, lam, logits.shape[-1], label_smoothing)
        ce = lambda z: soft_cross_entropy(z, targets)
      else:
        ce = lambda z: cross_entropy(z, labels, label_smoothing)
      loss = jnp.mean(ce(logits))
      for a in aux:
        loss = loss + aux_loss_weight * jnp.mean(ce(a))
      return loss, (logits, new_vars.get("batch_stats", {}))
    (loss, (logits, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
    return loss, logits, new_stats, transfer.merge(grads, jax.tree.map(jnp.zeros_like, fixed))

  def train_step(state: TrainState, batch: Dict[str, Any]):
    rng = jax.random.fold_in(state.rng, state.step)
    images, labels = model_input(batch), batch["label"]
    rolled, lam = labels, jnp.ones((), jnp.float32)
    if mixing:
      m = mix_lib.mix_batch(jax.random.fold_in(rng, _MIX_STREAM), images, labels, mixup_alpha=mixup_alpha,
                            cutmix_alpha=cutmix_alpha, prob=mix_prob, switch_prob=mix_switch_prob)
      images, rolled, lam = m.images, m.rolled, m.lam
    loss, logits, batch_stats, grads = _accumulated(grads_and_stats, grad_accum_steps, state, images, labels,
                                                    rolled, lam, rng)
    new_state, ok = _apply_if_finite(tx, state, grads, loss, batch_stats, ema_decay, ema_start_step)
    if mixing:
      targets = mix_lib.soft_targets(labels, rolled, lam, logits.shape[-1], label_smoothing)
      metrics = metric_sums(logits, mix_lib.dominant(mix_lib.Mixed(images, labels, rolled, lam)),
                            jnp.ones(labels.shape, bool), targets=targets)
    else:
      metrics = metric_sums(logits, labels, jnp.ones(labels.shape, bool), label_smoothing)
    metrics["total_loss"] = loss * labels.shape[0]  # with auxiliary losses; a sum like the others
    metrics["grad_norm"] = ok["grad_norm"]
    metrics["learning_rate"] = schedule(optim.updates_applied(state.opt_state, state.step))  # the rate this update used
    metrics["nonfinite_loss"] = ~ok["loss"]
    metrics["nonfinite_grads"] = ~ok["grads"]
    return new_state, metrics

  return train_step


def _accumulated(grads_and_stats, k: int, state, images, labels, rolled, lam, rng):
  """(loss, logits, batch_stats, grads) of the whole batch, as `k` microbatches (j, j+k, j+2k, ...) whose
  gradients and losses are averaged and whose batch statistics are updated in order; k=1: the batch at once."""
  if k == 1:
    return grads_and_stats(state.params, state.batch_stats, images, labels, rolled, lam, rng)
  micro = lambda x: jnp.moveaxis(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 1, 0)

  def body(carry, xs):
    grads_sum, stats, loss_sum = carry
    j, im, lb, rl = xs
    loss, logits, stats, grads = grads_and_stats(state.params, stats, im, lb, rl, lam, jax.random.fold_in(rng, j))
    return (jax.tree.map(jnp.add, grads_sum, grads), stats, loss_sum + loss), logits
  zeros = jax.tree.map(jnp.zeros_like, state.params)
  (grads, batch_stats, loss), logits = jax.lax.scan(
      body, (zeros, state.batch_stats, jnp.zeros((), jnp.float32)),
      (jnp.arange(k), micro(images), micro(labels), micro(rolled)))
  logits = jnp.moveaxis(logits, 0, 1).reshape(labels.shape[0], -1)
  return loss / k, logits, batch_stats, jax.tree.map(lambda g: g / k, grads)


def _apply_if_finite(tx, state, grads, loss, batch_stats, ema_decay: float, ema_start_step: int):
  """(new state, {'loss': finite, 'grads': finite, 'grad_norm'}): the update applied (and the moving average
  moved) only where loss and gradients are finite; otherwise every leaf keeps its value and only the step
  counter advances."""
  with jax.named_scope("update"):   # one name for the optimizer, EMA and checks in profiles (benchmarks.profile_step)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm = optax.global_norm(grads)
    loss_ok, grads_ok = jnp.isfinite(loss), jnp.isfinite(grad_norm)
    ok = loss_ok & grads_ok
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)
    new_state = state.replace(step=state.step + 1, params=keep(params, state.params),
                              batch_stats=keep(batch_stats, state.batch_stats),
                              opt_state=keep(opt_state, state.opt_state))
    if ema_decay > 0:
      rate = jnp.where(state.step >= ema_start_step, 1.0 - ema_decay, 1.0)  # 1: the average = the new values
      new = {"params": params, "batch_stats": batch_stats}
      new_state = new_state.replace(ema=keep(optax.incremental_update(new, state.ema, rate), state.ema))
  return new_state, {"loss": loss_ok, "grads": grads_ok, "grad_norm": grad_norm}


def make_eval_step(model, ema: bool = False):
  """Builds `eval_step(state, batch) -> metric sums` over the batch's unmasked examples; `ema`: with the moving
  average of the weights (and of the batch-norm statistics) instead of the raw ones."""

  def eval_step(state: TrainState, batch):
    variables = state_lib.ema_variables(state) if ema else {"params": state.params, "batch_stats": state.batch_stats}
    logits = model.apply(variables, model_input(batch), train=False)
    return metric_sums(logits, batch["label"], batch["mask"])

  return eval_step
