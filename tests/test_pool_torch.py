"""max_pool, avg_pool and lp_pool against PyTorch 2.13 itself (torch.nn.functional, CPU, float32): values,
return_indices and gradients on random 1-D and 2-D cases with ties (small integers), ceil_mode, padding, dilation
and count_include_pad; NaN; the padding rule."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from cnnjax.layers import avg_pool, lp_pool, max_pool
from tests import helpers

TORCH = {("max", 1): F.max_pool1d, ("max", 2): F.max_pool2d, ("avg", 1): F.avg_pool1d, ("avg", 2): F.avg_pool2d,
         ("lp", 1): F.lp_pool1d, ("lp", 2): F.lp_pool2d}


def _to_torch(x):  # (N, *spatial, C) -> (N, C, *spatial)
  return torch.tensor(np.moveaxis(np.asarray(x), -1, 1), requires_grad=True)


def _from_torch(t):
  return np.moveaxis(t.detach().numpy(), 1, -1)


def _torch_value_and_grad(fn, x, ct):
  """fn(x) and the gradient of sum(fn(x) * ct), both in channels-last layout."""
  tx = _to_torch(x)
  out = fn(tx)
  y = out[0] if isinstance(out, tuple) else out
  (y * torch.tensor(np.moveaxis(ct, -1, 1))).sum().backward()
  return out, _from_torch(tx.grad)


def _jax_grad(fn, x, ct):
  """The gradient of sum(fn(x) * ct), under one jit (one compilation instead of one per eager op)."""
  return np.asarray(jax.jit(jax.grad(lambda v: jnp.sum(fn(v) * ct)))(jnp.asarray(x)))


@st.composite
def cases(draw, dilation=True, padding=True):
  nd = draw(st.integers(1, 2))
  k = tuple(draw(st.integers(1, 3)) for _ in range(nd))
  s = tuple(draw(st.integers(1, 3)) for _ in range(nd))
  p = tuple(draw(st.integers(0, kk // 2)) if padding else 0 for kk in k)
  d = tuple(draw(st.integers(1, 3)) if dilation else 1 for _ in range(nd))
  size = tuple(draw(st.integers(max(1, dd * (kk - 1) + 1 - 2 * pp), 7)) for kk, pp, dd in zip(k, p, d))
  return dict(nd=nd, k=k, s=s, p=p, d=d, size=size, ceil_mode=draw(st.booleans()), seed=draw(st.integers(0, 2 ** 16)))


def _input(c, low=-3, high=3):
  """Small integers, so that windows hold ties; batch 2, 2 channels."""
  return np.random.default_rng(c["seed"]).integers(low, high + 1, size=(2, *c["size"], 2)).astype(np.float32)


def _cotangent(y_shape, seed):
  return np.random.default_rng(seed + 1).normal(size=y_shape).astype(np.float32)


@settings(max_examples=helpers.examples(20), deadline=None)
@given(cases())
def test_max_pool_values_indices_and_gradients_equal_torch(c):
  x = _input(c)
  kw = dict(kernel_size=c["k"], stride=c["s"], padding=c["p"], dilation=c["d"], ceil_mode=c["ceil_mode"])
  t_fn = lambda t: TORCH["max", c["nd"]](t, return_indices=True, **kw)
  try:
    y, ind = jax.jit(lambda v: max_pool(v, return_indices=True, **kw))(x)
  except ValueError as e:  # the one refusal torch computes: a window of padding only, where torch gives -inf
    assert "covers only padding" in str(e)
    assert np.isneginf(_from_torch(t_fn(_to_torch(x))[0])).any()
    return
  ct = _cotangent(y.shape, c["seed"])
  (t_y, t_ind), t_grad = _torch_value_and_grad(t_fn, x, ct)
  np.testing.assert_array_equal(y, _from_torch(t_y))
  np.testing.assert_array_equal(ind, _from_torch(t_ind))       # flat spatial index, first maximum on ties
  np.testing.assert_allclose(_jax_grad(lambda v: max_pool(v, **kw), x, ct), t_grad, rtol=1e-6, atol=1e-6)


@settings(max_examples=helpers.examples(15), deadline=None)
@given(cases(dilation=False), st.booleans(), st.sampled_from([None, None, 3]))
def test_avg_pool_values_and_gradients_equal_torch(c, count_include_pad, divisor_override):
  x = _input(c)
  kw = dict(kernel_size=c["k"], stride=c["s"], padding=c["p"], ceil_mode=c["ceil_mode"],
            count_include_pad=count_include_pad)
  if c["nd"] == 2:  # torch's avg_pool1d has no divisor_override
    kw["divisor_override"] = divisor_override
  y = jax.jit(lambda v: avg_pool(v, **kw))(x)
  ct = _cotangent(y.shape, c["seed"])
  t_y, t_grad = _torch_value_and_grad(lambda t: TORCH["avg", c["nd"]](t, **kw), x, ct)
  np.testing.assert_allclose(y, _from_torch(t_y), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(_jax_grad(lambda v: avg_pool(v, **kw), x, ct), t_grad, rtol=1e-5, atol=1e-6)


@settings(max_examples=helpers.examples(25), deadline=None)
@given(cases(dilation=False, padding=False), st.sampled_from([1, 2, 3, 1.5, float("inf"), -float("inf")]))
def test_lp_pool_values_and_gradients_equal_torch(c, p):
  """Inputs in [0, 2] (zero windows are common) for p != 1; p = 1 with signs, where sums of zero occur too."""
  x = _input(c, low=-2 if p in (1, float("inf"), -float("inf")) else 0, high=2)
  k = c["k"][0] if c["nd"] == 1 else c["k"]   # torch's lp_pool1d scales by an int kernel_size
  s = c["s"][0] if c["nd"] == 1 else c["s"]
  y = jax.jit(lambda v: lp_pool(v, p, k, s, c["ceil_mode"]))(x)
  ct = _cotangent(y.shape, c["seed"])
  t_y, t_grad = _torch_value_and_grad(lambda t: TORCH["lp", c["nd"]](t, p, k, s, c["ceil_mode"]), x, ct)
  np.testing.assert_allclose(y, _from_torch(t_y), rtol=1e-5, atol=1e-6)
  g = _jax_grad(lambda v: lp_pool(v, p, k, s, c["ceil_mode"]), x, ct)
  assert np.isfinite(g).all()
  np.testing.assert_allclose(g, t_grad, rtol=1e-4, atol=1e-5)


def test_lp_pool_hand_worked_against_torch():
  """ceil_mode: the partial window [1] of a kernel-2 pool counts twice (torch: avg_pool(x^p) * kernel size), so
  p=2 gives sqrt(2), not 1; a window of zeros has zero gradient; p=inf is max |x|."""
  x = np.array([3.0, 4.0, 0.0, 0.0, 1.0], np.float32).reshape(1, 5, 1)
  np.testing.assert_allclose(lp_pool(x, 2, 2, ceil_mode=True)[0, :, 0], [5.0, 0.0, np.sqrt(2)], rtol=1e-6)
  np.testing.assert_allclose(jax.grad(lambda v: lp_pool(v, 2, 2).sum())(jnp.asarray(x))[0, :, 0],
                             [0.6, 0.8, 0.0, 0.0, 0.0], rtol=1e-6)
  np.testing.assert_array_equal(lp_pool(-x, float("inf"), 2)[0, :, 0], [4.0, 0.0])
  t = _from_torch(F.lp_pool1d(_to_torch(x), 2, 2, ceil_mode=True))
  np.testing.assert_allclose(t[0, :, 0], [5.0, 0.0, np.sqrt(2)], rtol=1e-6)


@pytest.mark.parametrize("nd", [1, 2])
def test_max_pool_with_nan_equals_torch(nd):
  """NaN wins its window (the value is NaN) and the index is the window's last NaN, as in torch; all-NaN
  windows still index inside the input."""
  rng = np.random.default_rng(nd)
  shape = (2, 6, 2) if nd == 1 else (2, 6, 6, 2)
  for frac in (0.2, 0.6, 1.0):
    x = rng.integers(-3, 4, size=shape).astype(np.float32)
    x[rng.random(shape) < frac] = np.nan
    kw = dict(kernel_size=3, stride=2, padding=1, dilation=1 + (frac == 0.6), ceil_mode=True)
    y, ind = jax.jit(lambda v: max_pool(v, return_indices=True, **kw))(x)
    t_y, t_ind = TORCH["max", nd](_to_torch(x), return_indices=True, **kw)
    np.testing.assert_array_equal(y, _from_torch(t_y))             # NaN where torch has NaN
    np.testing.assert_array_equal(ind, _from_torch(t_ind))
    assert 0 <= int(ind.min()) and int(ind.max()) < np.prod(shape[1:-1])
    np.testing.assert_array_equal(max_pool(x, **kw), _from_torch(t_y))


@pytest.mark.parametrize("k, p, d", [(3, 2, 2), (2, 2, 1), (4, 3, 2), (1, 1, 3)])
def test_padding_beyond_half_the_undilated_kernel_is_refused_like_torch(k, p, d):
  """torch 2.13 refuses padding > kernel_size // 2 whatever the dilation; so do max_pool and avg_pool."""
  x = np.zeros((1, 12, 12, 1), np.float32)
  with pytest.raises(RuntimeError, match="half of"):
    F.max_pool2d(_to_torch(x), k, 1, p, d)
  with pytest.raises(ValueError, match=f"at most kernel_size // 2 = {k // 2}"):
    max_pool(x, k, 1, p, d)
  if d == 1:
    with pytest.raises(RuntimeError, match="half of"):
      F.avg_pool2d(_to_torch(x), k, 1, p)
    with pytest.raises(ValueError, match=f"at most kernel_size // 2 = {k // 2}"):
      avg_pool(x, k, 1, p)
  # One less padding is allowed by both and gives the same result.
  np.testing.assert_array_equal(max_pool(x, k, 1, k // 2, d), _from_torch(F.max_pool2d(_to_torch(x), k, 1, k // 2, d)))
