"""Loss and metrics against hand-worked examples and numpy float64."""
import jax
import jax.numpy as jnp
import optax
import numpy as np

from cnnjax.train import steps


def test_topk_hand_worked_with_ties():
  """Row r puts its label at rank r + 1 of 7 (logits 6, 5, ..., 0), so top-k is right on exactly the first k
  rows and top-k, top-(k-1) and top-(k+1) differ for every k; ties count against the label: a label tied
  with one other class first is rank 2, a row of equal logits rank 7."""
  ranked = np.tile(np.arange(6.0, -1.0, -1.0), (7, 1))
  tied = np.array([[1.0, 1.0, 0, 0, 0, 0, 0], [2.0] * 7, [0, 0, 0, 0, 0, 0, 3.0]])
  logits = jnp.asarray(np.concatenate([ranked, tied]), jnp.float32)
  labels = jnp.array([0, 1, 2, 3, 4, 5, 6, 0, 3, 6])
  rank = np.array([1, 2, 3, 4, 5, 6, 7, 2, 7, 1])  # worked out by hand from the rows above
  for k in range(1, 8):
    np.testing.assert_array_equal(steps.topk_correct(logits, labels, k), (rank <= k).astype(np.float32),
                                  err_msg=f"top-{k}")
  m = steps.metric_sums(logits, labels, jnp.ones(10, bool))
  assert (float(m["top1"]), float(m["top5"]), float(m["count"])) == (2.0, 7.0, 10.0)  # ranks <= 1; <= 5


def test_topk_counts_nonfinite_logits_as_wrong():
  logits = jnp.array([[jnp.nan, 0.0, 1.0], [jnp.inf, 0.0, 1.0], [0.0, 0.0, 1.0]])
  labels = jnp.array([2, 0, 2])
  np.testing.assert_array_equal(steps.topk_correct(logits, labels, 1), [0, 0, 1])


def test_cross_entropy_matches_numpy_float64():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(7, 10)) * 3
  labels = rng.integers(0, 10, 7)
  z = logits - logits.max(-1, keepdims=True)
  logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
  want = -logp[np.arange(7), labels]
  got = steps.cross_entropy(jnp.asarray(logits, jnp.float32), jnp.asarray(labels))
  np.testing.assert_allclose(got, want, rtol=1e-5)
  # Label smoothing eps: target (1-eps) one-hot + eps/K uniform.
  eps = 0.1
  t = np.full((7, 10), eps / 10)
  t[np.arange(7), labels] += 1 - eps
  want_s = -(t * logp).sum(-1)
  got_s = steps.cross_entropy(jnp.asarray(logits, jnp.float32), jnp.asarray(labels), eps)
  np.testing.assert_allclose(got_s, want_s, rtol=1e-5)


def test_metric_sums_ignore_masked_examples():
  logits = jnp.array([[2.0, 0.0], [0.0, 2.0], [5.0, -5.0]])
  labels = jnp.array([0, 0, 1])
  mask = jnp.array([True, True, False])
  m = steps.metric_sums(logits, labels, mask)
  assert float(m["count"]) == 2
  assert float(m["top1"]) == 1
  want_loss = np.log1p(np.exp(-2.0)) + np.log1p(np.exp(2.0))
  np.testing.assert_allclose(float(m["loss"]), want_loss, rtol=1e-5)


def test_logged_learning_rate_is_the_one_applied_after_skipped_steps():
  """A skipped non-finite step leaves the optimizer (and its schedule count) where it was while the step counter
  goes on; the logged rate must be the one the next update really used: checked against the parameter change
  of plain SGD, -lr * grad, with grad from jax.grad."""
  import flax.linen as nn
  from cnnjax.train import state as state_lib

  class Linear(nn.Module):
    @nn.compact
    def __call__(self, x, *, train):
      return nn.Dense(3)(x.reshape(x.shape[0], -1))

  model, schedule = Linear(), optax.linear_schedule(0.1, 1.0, 9)  # 0.1, 0.2, 0.3, ...
  tx = optax.sgd(schedule)
  step = jax.jit(steps.make_train_step(model, tx, schedule))
  st = state_lib.create(jax.random.PRNGKey(0), model, tx, (2, 2, 1))
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 2, 2, 1))
  good = {"image": x, "label": jnp.array([0, 1, 2, 0])}
  bad = {"image": x.at[0, 0, 0, 0].set(jnp.nan), "label": good["label"]}
  st, m1 = step(st, good)
  st, m2 = step(st, bad)
  assert bool(m2["nonfinite_loss"]) and int(st.step) == 2
  before = st.params
  loss = lambda p: jnp.mean(steps.cross_entropy(model.apply({"params": p}, x, train=True), good["label"]))
  grads = jax.grad(loss)(before)
  st, m3 = step(st, good)
  np.testing.assert_allclose([m1["learning_rate"], m2["learning_rate"], m3["learning_rate"]], [0.1, 0.2, 0.2],
                             rtol=1e-6)
  applied = jax.tree.map(lambda new, old, g: (old - new) / g, st.params, before, grads)
  np.testing.assert_allclose(applied["Dense_0"]["kernel"], 0.2, rtol=1e-4)


def test_skipped_nonfinite_step_leaves_every_piece_of_state_bit_identical():
  """A batch with one NaN pixel makes the loss, the gradients and the batch statistics NaN; the step must then
  keep the parameters, the batch-norm running statistics and the optimizer state (momentum trace, schedule
  count) bit for bit as they were, and the RNG key, while the step counter advances by one. The state before is
  a trained one (a good step first), so momentum and statistics are not at their initial values, where a guard
  that resets them would pass unseen."""
  import flax.linen as nn
  from cnnjax.layers import BatchNorm
  from cnnjax.train import optim, state as state_lib
  from tests.helpers import tiny_config

  class ConvNormDense(nn.Module):
    @nn.compact
    def __call__(self, x, *, train):
      x = nn.Conv(4, (3, 3), use_bias=False)(x)
      x = nn.relu(BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)(x))
      return nn.Dense(10)(x.reshape(x.shape[0], -1))

  model, c = ConvNormDense(), tiny_config()      # the config's optimizer: SGD, momentum 0.9, weight decay, cosine
  tx, schedule = optim.build(c, steps_per_epoch=10, total_steps=10)
  step = jax.jit(steps.make_train_step(model, tx, schedule))
  st = state_lib.create(jax.random.PRNGKey(0), model, tx, (8, 8, 3))
  x = jax.random.normal(jax.random.PRNGKey(1), (8, 8, 8, 3))
  labels = jnp.arange(8) % 10
  st, m = step(st, {"image": x, "label": labels})
  assert not bool(m["nonfinite_loss"]) and not bool(m["nonfinite_grads"])
  before = jax.tree.map(np.asarray, st)
  momentum = [a for a in jax.tree.leaves(before.opt_state) if np.ndim(a) > 0]
  assert momentum and all(np.abs(a).max() > 0 for a in momentum)         # a momentum trace to keep
  assert int(optim.updates_applied(before.opt_state, -1)) == 1           # and a schedule count
  assert np.abs(before.batch_stats["BatchNorm_0"]["mean"]).max() > 0       # statistics moved from their init
  after, m = step(st, {"image": x.at[3, 2, 1, 0].set(jnp.nan), "label": labels})
  assert bool(m["nonfinite_loss"]) and bool(m["nonfinite_grads"])
  assert int(after.step) == int(before.step) + 1
  for part in ("params", "batch_stats", "opt_state", "rng"):
    want, got = getattr(before, part), getattr(after, part)
    assert jax.tree.structure(want) == jax.tree.structure(got), part
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(want), jax.tree.leaves(got)):
      np.testing.assert_array_equal(np.asarray(b), a, err_msg=f"{part}{jax.tree_util.keystr(path)}")
