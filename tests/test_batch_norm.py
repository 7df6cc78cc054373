"""cnnjax.layers.BatchNorm against flax.linen.BatchNorm (the drop-in it replaces) and numpy float64."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax.layers import BatchNorm

X = np.random.default_rng(0).normal(2.0, 3.0, (8, 5, 5, 6)).astype(np.float32)


def _apply(module, variables, x):
  def f(v, x):
    y, new = module.apply(v, x, mutable=["batch_stats"])
    return (jnp.sin(y.astype(jnp.float32)) * jnp.arange(1.0, 7.0)).sum(), (y, new)
  return jax.jit(jax.value_and_grad(f, argnums=(0, 1), has_aux=True))(variables, x)


@pytest.mark.parametrize("impl", ["xla", "auto"])   # 'auto': the sums as matrix products on CPU
@pytest.mark.parametrize("train", [True, False])
def test_matches_flax_batch_norm_values_stats_and_gradients(train, impl):
  ours = BatchNorm(use_running_average=not train, momentum=0.9, impl=impl)
  ref = nn.BatchNorm(use_running_average=not train, momentum=0.9)
  v = ref.init(jax.random.PRNGKey(0), X)
  assert jax.tree.map(jnp.shape, ours.init(jax.random.PRNGKey(0), X)) == jax.tree.map(jnp.shape, v)
  v = jax.tree.map(lambda a: a + 0.5 * jnp.linspace(0.1, 1.0, a.size).reshape(a.shape), v)  # non-trivial state
  (l1, (y1, s1)), g1 = _apply(ref, v, X)
  (l2, (y2, s2)), g2 = _apply(ours, v, X)
  np.testing.assert_allclose(y2, y1, rtol=1e-5, atol=2e-5)
  close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
  jax.tree.map(close, s2, s1)
  jax.tree.map(close, g2, g1)


@pytest.mark.parametrize("impl", ["xla", "auto"])
def test_training_step_matches_numpy_float64(impl):
  """y = (x - mean) / sqrt(var + eps) * scale + bias with the biased variance; running stats move by momentum;
  d loss / d x from the textbook formula (Ioffe & Szegedy 2015, Sec. 3)."""
  x = X.astype(np.float64).reshape(-1, 6)
  scale, bias, eps, mom = np.linspace(0.5, 1.5, 6), np.linspace(-1, 1, 6), 1e-5, 0.9
  mean, var = x.mean(0), x.var(0)
  xhat = (x - mean) / np.sqrt(var + eps)
  y = xhat * scale + bias
  dy = np.cos(y) * np.arange(1.0, 7.0)  # d/dy of sum(sin(y) * [1..6])
  m = x.shape[0]
  dx = scale / np.sqrt(var + eps) * (dy - dy.mean(0) - xhat * (dy * xhat).mean(0))
  module = BatchNorm(momentum=mom, impl=impl)
  v = {"params": {"scale": jnp.asarray(scale, jnp.float32), "bias": jnp.asarray(bias, jnp.float32)},
       "batch_stats": {"mean": jnp.zeros(6), "var": jnp.ones(6)}}
  (_, (y_got, new)), (g_v, g_x) = _apply(module, v, X)
  np.testing.assert_allclose(np.asarray(y_got).reshape(-1, 6), y, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(new["batch_stats"]["mean"], (1 - mom) * mean, rtol=1e-5)
  np.testing.assert_allclose(new["batch_stats"]["var"], mom + (1 - mom) * var, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(g_x).reshape(-1, 6), dx, rtol=1e-3, atol=1e-4)
  np.testing.assert_allclose(g_v["params"]["scale"], (dy * xhat).sum(0), rtol=1e-4, atol=1e-3)
  np.testing.assert_allclose(g_v["params"]["bias"], dy.sum(0), rtol=1e-4, atol=1e-3)
  assert m == 200


def test_bfloat16_compute_keeps_float32_statistics():
  module = BatchNorm(momentum=0.9, dtype=jnp.bfloat16)
  v = module.init(jax.random.PRNGKey(0), X)
  y, new = module.apply(v, jnp.asarray(X, jnp.bfloat16), mutable=["batch_stats"])
  assert y.dtype == jnp.bfloat16 and new["batch_stats"]["mean"].dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(y, np.float32).reshape(-1, 6).mean(0), 0.0, atol=0.05)
  np.testing.assert_allclose(new["batch_stats"]["mean"], 0.1 * X.reshape(-1, 6).mean(0), rtol=0.02)


def test_unknown_impl_is_refused():
  with pytest.raises(ValueError, match=r"BatchNorm impl='dot' is not one of \('xla', 'auto'\)"):
    BatchNorm(impl="dot").init(jax.random.PRNGKey(0), X)
