"""Pure train and eval steps, and the metrics they return as sums (exact under padding and sharding)."""
from typing import Any, Dict

import jax
import jax.numpy as jnp
import optax

from cnnjax.train.state import TrainState


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
  outputs equal logits for all classes therefore scores 0, not 100%.
  """
  label_logit = jnp.take_along_axis(logits, labels[:, None], axis=-1)
  others_ge = jnp.sum(logits >= label_logit, axis=-1) - 1
  return (others_ge < k).astype(jnp.float32)


def metric_sums(logits, labels, mask, label_smoothing=0.0) -> Dict[str, jax.Array]:
  """Sums over the unmasked examples of loss and top-1/top-5 correctness, and their count."""
  mask = mask.astype(jnp.float32)
  return {
      "loss": jnp.sum(cross_entropy(logits, labels, label_smoothing) * mask),
      "top1": jnp.sum(topk_correct(logits, labels, 1) * mask),
      "top5": jnp.sum(topk_correct(logits, labels, min(5, logits.shape[-1])) * mask),
      "count": jnp.sum(mask),
  }


def split_outputs(out):
  """Models return logits, or (logits, aux_logits_tuple) in training (GoogLeNet's auxiliary classifiers)."""
  if isinstance(out, tuple):
    return out[0], tuple(out[1])
  return out, ()


def make_train_step(model, tx, schedule, *, label_smoothing: float = 0.0, aux_loss_weight: float = 0.3):
  """Builds `train_step(state, batch) -> (state, metrics)`; metrics are sums (see `metric_sums`)."""

  def train_step(state: TrainState, batch: Dict[str, Any]):
    dropout_rng = jax.random.fold_in(state.rng, state.step)
    images, labels = batch["image"], batch["label"]

    def loss_fn(params):
      variables = {"params": params, "batch_stats": state.batch_stats}
      out, new_vars = model.apply(variables, images, train=True, mutable=["batch_stats"],
                                  rngs={"dropout": dropout_rng})
      logits, aux = split_outputs(out)
      loss = jnp.mean(cross_entropy(logits, labels, label_smoothing))
      for a in aux:
        loss = loss + aux_loss_weight * jnp.mean(cross_entropy(a, labels, label_smoothing))
      return loss, (logits, new_vars.get("batch_stats", {}))

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = metric_sums(logits, labels, jnp.ones(labels.shape, bool), label_smoothing)
    metrics["total_loss"] = loss * labels.shape[0]  # with auxiliary losses; a sum like the others
    metrics["grad_norm"] = optax.global_norm(grads)
    metrics["learning_rate"] = schedule(state.step)
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state)
    return new_state, metrics

  return train_step


def make_eval_step(model):
  """Builds `eval_step(state, batch) -> metric sums` over the batch's unmasked examples."""

  def eval_step(state: TrainState, batch):
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    logits = model.apply(variables, batch["image"], train=False)
    return metric_sums(logits, batch["label"], batch["mask"])

  return eval_step
