"""Pooling against numpy float64 loops and hand-computed PyTorch-semantics cases (torch: test_pool_torch.py); LRN
against numpy float64;
the Linen Conv as a drop-in for flax.linen.Conv."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from cnnjax import layers
from cnnjax.layers import autotune, avg_pool, local_response_norm, max_pool
from cnnjax.layers.pool import lp_pool
from tests import helpers
from tests.helpers import force_autotune_plan

X55 = jnp.arange(25, dtype=jnp.float32).reshape(1, 5, 5, 1)


def test_max_pool_hand_worked_pytorch_cases():
  # torch.nn.MaxPool2d(2)(arange(25).view(5,5)) -> [[6, 8], [16, 18]]; ceil_mode keeps the partial windows.
  np.testing.assert_array_equal(max_pool(X55, 2)[0, ..., 0], [[6, 8], [16, 18]])
  np.testing.assert_array_equal(max_pool(X55, 2, ceil_mode=True)[0, ..., 0], [[6, 8, 9], [16, 18, 19], [21, 23, 24]])
  # kernel 3, stride 2, padding 1: windows centred on 0, 2, 4.
  np.testing.assert_array_equal(max_pool(X55, 3, 2, 1)[0, ..., 0], [[6, 8, 9], [16, 18, 19], [21, 23, 24]])
  # dilation 2, kernel 2: window {i, i+2}: out 3x3 with max at (i+2, j+2).
  np.testing.assert_array_equal(max_pool(X55, 2, 1, dilation=2)[0, ..., 0], [[12, 13, 14], [17, 18, 19], [22, 23, 24]])
  # ceil_mode never starts a window in the right padding: size 4, k 2, s 2, p 1 -> 3 windows, not 4.
  assert max_pool(jnp.ones((1, 4, 4, 1)), 2, 2, 1, ceil_mode=True).shape == (1, 3, 3, 1)


def test_avg_pool_hand_worked_pytorch_cases():
  # ceil_mode: the partial last window divides by the elements it covers: (4 + 9) / 2 = 6.5.
  np.testing.assert_allclose(avg_pool(X55, 2, ceil_mode=True)[0, 0, :, 0], [3, 5, 6.5])
  # padding 1, count_include_pad=True: corner window {0, 1, 5, 6} / 9 = 4/3; False: / 4 = 3.
  np.testing.assert_allclose(avg_pool(X55, 3, 2, 1)[0, 0, 0, 0], 12 / 9, rtol=1e-6)
  np.testing.assert_allclose(avg_pool(X55, 3, 2, 1, count_include_pad=False)[0, 0, 0, 0], 3.0, rtol=1e-6)
  np.testing.assert_allclose(avg_pool(X55, 2, divisor_override=1)[0, 0, 0, 0], 0 + 1 + 5 + 6)


def test_lp_pool_hand_worked():
  x = jnp.array([3.0, 4.0, 1.0, 1.0]).reshape(1, 4, 1)
  np.testing.assert_allclose(lp_pool(x, 2, 2)[0, :, 0], [5.0, np.sqrt(2)], rtol=1e-6)


def test_max_pool_indices_and_gradient_tie_rule():
  """Ties: the first maximum in row-major window order gets the gradient and is the reported index."""
  x = jnp.array([[1.0, 3.0], [3.0, 2.0]]).reshape(1, 2, 2, 1)
  y, idx = max_pool(x, 2, return_indices=True)
  assert float(y.ravel()[0]) == 3.0 and int(idx.ravel()[0]) == 1
  g = jax.grad(lambda z: max_pool(z, 2).sum())(x)
  np.testing.assert_array_equal(g[0, ..., 0], [[0, 1], [0, 0]])
  y, idx = max_pool(X55, 2, ceil_mode=True, return_indices=True)
  np.testing.assert_array_equal(idx[0, ..., 0], [[6, 8, 9], [16, 18, 19], [21, 23, 24]])  # = values here


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_pool_gradients_under_jit_match_numpy(dtype):
  """Training differentiates the pools inside jit; the gradient of max_pool(3, 2, 1) is, per window, a one at
  its (first) maximum: counted here by hand in numpy. avg_pool's is the number of windows covering each pixel / 9."""
  x = np.random.default_rng(0).permutation(2 * 7 * 7 * 3).reshape(2, 7, 7, 3).astype(np.float64)
  want_max, want_avg = np.zeros_like(x), np.zeros_like(x)
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
  for i in range(4):
    for j in range(4):
      win = xp[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3]
      n, r, c, ch = np.nonzero(win == win.max(axis=(1, 2), keepdims=True))
      np.add.at(want_max, (n, r + 2 * i - 1, c + 2 * j - 1, ch), 1.0)
      rows, cols = slice(max(2 * i - 1, 0), 2 * i + 2), slice(max(2 * j - 1, 0), 2 * j + 2)
      want_avg[:, rows, cols] += 1 / 9
  xj = jnp.asarray(x, dtype)
  got_max = jax.jit(jax.grad(lambda z: max_pool(z, 3, 2, 1).astype(jnp.float32).sum()))(xj)
  got_avg = jax.jit(jax.grad(lambda z: avg_pool(z, 3, 2, 1).astype(jnp.float32).sum()))(xj)
  assert got_max.dtype == dtype
  np.testing.assert_array_equal(np.asarray(got_max, np.float64), want_max)
  np.testing.assert_allclose(np.asarray(got_avg, np.float64), want_avg, rtol=1e-2 if dtype == jnp.bfloat16 else 1e-6)


def _pool_numpy(x, k, s, p, d, ceil_mode, op, count_include_pad=True):
  """PyTorch's pooling spelled out in float64 loops, one window at a time: window o of a dim covers positions
  o*s - p + j*d (j < k) of the input; the output length is torch's formula; ceil_mode drops a window that would
  start in the right padding. avg divides by the window's positions inside the padded input (count_include_pad)
  or inside the input."""
  x = np.asarray(x, np.float64)
  spatial = x.shape[1:-1]
  outs = []
  for n in spatial:
    o = (n + 2 * p - d * (k - 1) - 1 + ((s - 1) if ceil_mode else 0)) // s + 1
    outs.append(o - 1 if ceil_mode and (o - 1) * s >= n + p else o)
  y = np.zeros((x.shape[0], *outs, x.shape[-1]))
  for out_idx in np.ndindex(*outs):
    pos = [[o * s - p + j * d for j in range(k)] for o in out_idx]
    inside = [[q for q in ps if 0 <= q < n] for ps, n in zip(pos, spatial)]
    win = x[(slice(None), *np.ix_(*inside), slice(None))].reshape(x.shape[0], -1, x.shape[-1])
    if op == "max":
      y[(slice(None), *out_idx, slice(None))] = win.max(axis=1)
    else:
      padded = [[q for q in ps if -p <= q < n + p] for ps, n in zip(pos, spatial)]
      count = np.prod([len(c) for c in (padded if count_include_pad else inside)])
      y[(slice(None), *out_idx, slice(None))] = win.sum(axis=1) / count
  return y


@settings(max_examples=helpers.examples(20), deadline=None)
@given(nd=st.integers(1, 3), k=st.integers(1, 3), s=st.integers(1, 3), p=st.integers(0, 1), d=st.integers(1, 2),
       ceil_mode=st.booleans(), count_include_pad=st.booleans(), size=st.integers(3, 6), seed=st.integers(0, 1000))
def test_pools_match_numpy_loops(nd, k, s, p, d, ceil_mode, count_include_pad, size, seed):
  """max_pool and avg_pool in 1-3 spatial dims against the float64 loops above (torch itself, in 1-D and 2-D, is
  the reference in test_pool_torch.py)."""
  p = min(p, k // 2)
  size = max(size, d * (k - 1) + 1 - 2 * p)  # the window fits the padded input
  x = np.random.default_rng(seed).integers(-3, 4, size=(2,) + (size,) * nd + (2,)).astype(np.float32)  # ties
  np.testing.assert_array_equal(max_pool(x, k, s, p, d, ceil_mode), _pool_numpy(x, k, s, p, d, ceil_mode, "max"))
  np.testing.assert_allclose(avg_pool(x, k, s, p, ceil_mode, count_include_pad),
                             _pool_numpy(x, k, s, p, 1, ceil_mode, "avg", count_include_pad), rtol=1e-6, atol=1e-6)


def test_max_pool_gradient_with_dilation():
  """Window {(i, j), (i, j+2), (i+2, j), (i+2, j+2)} of arange(16) peaks at (i+2, j+2): one unit of gradient for
  each of the four bottom-right elements (lax's own max-pool gradient has no window dilation)."""
  g = jax.grad(lambda x: max_pool(x, 2, 1, dilation=2).sum())(jnp.arange(16.0).reshape(1, 4, 4, 1))
  np.testing.assert_array_equal(g[0, ..., 0], [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]])


def test_pool_errors_name_the_value():
  with pytest.raises(ValueError, match="larger than the padded input"):
    max_pool(jnp.ones((1, 2, 2, 1)), 3)
  # torch 2.13: padding <= kernel_size // 2, dilation not counted (k=3, d=2 spans 5, yet p=2 is refused).
  with pytest.raises(ValueError, match=r"padding=\(2,\) .*kernel_size=\(3,\).*at most kernel_size // 2 = 1"):
    max_pool(jnp.ones((1, 9, 1)), 3, 1, padding=2, dilation=2)
  max_pool(jnp.ones((1, 9, 1)), 3, 1, padding=1, dilation=2)
  with pytest.raises(ValueError, match=r"padding=\(2, 2\) .*at most kernel_size // 2 = 1"):
    avg_pool(jnp.ones((1, 6, 6, 1)), 2, padding=2)
  with pytest.raises(ValueError, match="window 0 .*covers only padding"):
    max_pool(jnp.ones((1, 2, 1)), 2, 1, padding=1, dilation=3)   # taps at -1 and 2 of an input of 2
  with pytest.raises(ValueError, match="norm_type=0 must be > 0"):
    lp_pool(jnp.ones((1, 4, 1)), 0, 2)


def _lrn_numpy(x, n, alpha, beta, k, divide_by_n=False):
  x = np.asarray(x, np.float64)
  c = x.shape[-1]
  out = np.empty_like(x)
  for i in range(c):
    lo, hi = max(0, i - n // 2), min(c, i + (n - 1 - n // 2) + 1)
    s = np.sum(x[..., lo:hi] ** 2, axis=-1)
    out[..., i] = x[..., i] / (k + (alpha / n if divide_by_n else alpha) * s) ** beta
  return out


def test_lrn_matches_paper_formula_and_pytorch_convention():
  """AlexNet Sec. 3.3: b_c = a_c / (k + alpha sum_{|c'-c| <= n/2} a_c'^2)^beta. PyTorch's LocalResponseNorm
  divides alpha by n: torch.nn.LocalResponseNorm(n, alpha) == local_response_norm(x, n, alpha / n)."""
  x = np.random.default_rng(0).normal(size=(2, 3, 3, 7)) * 5
  np.testing.assert_allclose(local_response_norm(jnp.asarray(x, jnp.float32), 5, 1e-2, 0.75, 2.0),
                             _lrn_numpy(x, 5, 1e-2, 0.75, 2.0), rtol=1e-5)
  np.testing.assert_allclose(local_response_norm(jnp.asarray(x, jnp.float32), 5, 1e-2 / 5, 0.75, 1.0),
                             _lrn_numpy(x, 5, 1e-2, 0.75, 1.0, divide_by_n=True), rtol=1e-5)
  # Hand-worked: channels [1, 2] with n=3, alpha=1, beta=1, k=0: b = a / (1 + 4) = [0.2, 0.4].
  np.testing.assert_allclose(local_response_norm(jnp.array([[1.0, 2.0]]), 3, 1.0, 1.0, 0.0), [[0.2, 0.4]], rtol=1e-6)


@pytest.mark.parametrize("impl", layers.IMPLS)
def test_conv_module_is_a_drop_in_for_flax_conv(impl):
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 7, 7, 4))
  ref = nn.Conv(6, (3, 3), padding="SAME")
  v = ref.init(jax.random.PRNGKey(1), x)
  mine = layers.Conv(6, (3, 3), padding="SAME", impl=impl)
  v2 = mine.init(jax.random.PRNGKey(1), x)
  assert jax.tree.map(lambda a: (a.shape, a.dtype), v2) == jax.tree.map(lambda a: (a.shape, a.dtype), v)
  jax.tree.map(np.testing.assert_array_equal, v2, v)  # same initialisers, same names
  np.testing.assert_allclose(mine.apply(v, x), ref.apply(v, x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("size,strides,padding", [(8, 2, "SAME"), (17, 2, "SAME"), (16, 1, "SAME"),
                                                   (20, (2, 3), [(1, 1), (0, 2)])])
def test_conv_module_gradients_match_flax_conv_under_jit(size, strides, padding, tmp_path, monkeypatch):
  """impl='auto''s CPU paths, forced through the autotuner's cache (the input materialised through a conditional
  for stride 1; the polyphase input gradient for strided layers), leave values and gradients unchanged."""
  x = jax.random.normal(jax.random.PRNGKey(0), (2, size, size, 4))
  ref, mine = (nn.Conv(6, (3, 3), strides=strides, padding=padding),
               layers.Conv(6, (3, 3), strides=strides, padding=padding, impl="auto"))
  v = ref.init(jax.random.PRNGKey(1), x)
  with autotune.collecting() as specs:
    jax.eval_shape(mine.init, jax.random.PRNGKey(1), x)
  force_autotune_plan(tmp_path, monkeypatch, {s: "lax_cpu" if s.strides == (1, 1) else "polyphase"
                                              for s in specs.values()})
  with layers.record_conv_impls() as plan:
    jax.eval_shape(mine.init, jax.random.PRNGKey(1), x)
  assert [r.used for r in plan] == ["lax_cpu" if strides == 1 else "polyphase"]
  loss = lambda m: jax.jit(jax.grad(lambda v, x: jnp.sum(jnp.sin(m.apply(v, jax.nn.relu(x) * 2))), (0, 1)))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), loss(mine)(v, x), loss(ref)(v, x))


def test_materialize_is_the_identity_even_for_nan():
  from cnnjax.layers.cpu_fast import materialize
  x = jnp.array([[jnp.nan, 1.0], [2.0, -jnp.inf]])
  np.testing.assert_array_equal(jax.jit(materialize)(x), x)
  np.testing.assert_array_equal(jax.jit(materialize)(x[::-1]), x[::-1])
  np.testing.assert_array_equal(jax.grad(lambda v: jnp.sum(materialize(v) * 3.0))(jnp.ones(3)), [3.0, 3.0, 3.0])
