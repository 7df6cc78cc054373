"""Pooling with PyTorch's MaxPool/AvgPool/LPPool semantics on channels-last inputs (N, *spatial, C).

Output size per spatial dim (PyTorch): out = floor((H + 2p - d(k-1) - 1 [+ s - 1 if ceil_mode]) / s) + 1, and
with ceil_mode the last window is dropped if it would start in the right padding ((out-1)s >= H + p). The
windows that ceil_mode adds past the padded input are filled with -inf (max) or zeros that are not counted
(average). Padding p must be at most half the (dilated) kernel, as in PyTorch.

Gradients of max pooling go to exactly one element per window: with ties, the first maximum in row-major
order inside the window (XLA's select-and-scatter keeps the first element that is >= all later ones). The
same element is what `return_indices` reports (flat index into the input's spatial dims, like PyTorch).
"""
import math

import jax.numpy as jnp
import numpy as np
from jax import lax


def _tuple(v, n, name):
  t = (v,) * n if isinstance(v, int) else tuple(v)
  if len(t) != n or not all(isinstance(i, (int, np.integer)) for i in t):
    raise ValueError(f"{name}={v!r} must be an int or a tuple of {n} ints")
  return tuple(int(i) for i in t)


def _geometry(x, kernel_size, stride, padding, dilation, ceil_mode):
  """Per spatial dim: (k, s, p, d, extra high padding, out)."""
  n = x.ndim - 2
  if n < 1:
    raise ValueError(f"pooling needs an input (N, *spatial, C) with at least one spatial dim, got shape {x.shape}")
  k = _tuple(kernel_size, n, "kernel_size")
  s = _tuple(stride if stride is not None else kernel_size, n, "stride")
  p = _tuple(padding, n, "padding")
  d = _tuple(dilation, n, "dilation")
  dims = []
  for size, ki, si, pi, di in zip(x.shape[1:-1], k, s, p, d):
    if ki < 1 or si < 1 or di < 1 or pi < 0:
      raise ValueError(f"kernel_size {k}, stride {s}, dilation {d} must be >= 1 and padding {p} >= 0")
    if pi > (di * (ki - 1) + 1) // 2:
      raise ValueError(f"padding={p} must be at most half the dilated kernel size ({k}, dilation {d})")
    span = di * (ki - 1) + 1
    if size + 2 * pi < span:
      raise ValueError(f"the window ({span}, kernel {ki} dilation {di}) is larger than the padded input "
                       f"({size} + 2*{pi}) of shape {x.shape}")
    out = (size + 2 * pi - span + ((si - 1) if ceil_mode else 0)) // si + 1
    if ceil_mode and (out - 1) * si >= size + pi:
      out -= 1
    extra = max(0, (out - 1) * si + span - (size + 2 * pi))
    dims.append((ki, si, pi, di, extra, out))
  return dims


def _window_args(dims):
  return ((1,) + tuple(g[0] for g in dims) + (1,), (1,) + tuple(g[1] for g in dims) + (1,),
          ((0, 0),) + tuple((g[2], g[2] + g[4]) for g in dims) + ((0, 0),),
          (1,) + tuple(g[3] for g in dims) + (1,))


def max_pool(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
  """torch.nn.MaxPool{1,2,3}d on (N, *spatial, C). With return_indices, also the flat spatial index of each
  maximum (the first one in row-major window order on ties)."""
  x = jnp.asarray(x)
  dims = _geometry(x, kernel_size, stride, padding, dilation, ceil_mode)
  window, strides, pads, wdil = _window_args(dims)
  init = -jnp.inf if jnp.issubdtype(x.dtype, jnp.floating) else jnp.iinfo(x.dtype).min
  y = lax.reduce_window(x, np.array(init, x.dtype), lax.max, window, strides, pads, window_dilation=wdil)
  if not return_indices:
    return y
  spatial = x.shape[1:-1]
  idx = jnp.broadcast_to(jnp.arange(math.prod(spatial), dtype=jnp.int32).reshape((1, *spatial, 1)), x.shape)

  def pick(a, b):  # keep a's (value, index) unless b is strictly larger, or equal with a smaller index
    (va, ia), (vb, ib) = a, b
    take_b = (vb > va) | ((vb == va) & (ib < ia))
    return jnp.where(take_b, vb, va), jnp.where(take_b, ib, ia)
  _, ind = lax.reduce_window((x, idx), (np.array(init, x.dtype), jnp.int32(np.iinfo(np.int32).max)), pick,
                             window, strides, pads, window_dilation=wdil)
  return y, ind


def avg_pool(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None):
  """torch.nn.AvgPool{1,2,3}d on (N, *spatial, C): the divisor counts the zero padding (count_include_pad) but
  never the windows' part beyond the padded input that ceil_mode adds."""
  x = jnp.asarray(x)
  dims = _geometry(x, kernel_size, stride, padding, 1, ceil_mode)
  window, strides, pads, _ = _window_args(dims)
  total = lax.reduce_window(x, np.array(0, x.dtype), lax.add, window, strides, pads)
  if divisor_override:
    return total / divisor_override
  spatial = x.shape[1:-1]
  ones = jnp.ones((1, *spatial, 1), jnp.float32)
  if count_include_pad:  # the padded region counts, ceil_mode's extra does not
    ones = jnp.pad(ones, ((0, 0),) + tuple((g[2], g[2]) for g in dims) + ((0, 0),), constant_values=1.0)
    cpads = ((0, 0),) + tuple((0, g[4]) for g in dims) + ((0, 0),)
  else:
    cpads = pads
  count = lax.reduce_window(ones, 0.0, lax.add, window, strides, cpads)
  return (total / count).astype(x.dtype)


def lp_pool(x, norm_type, kernel_size, stride=None, ceil_mode=False):
  """torch.nn.LPPool{1,2}d: (sum over the window of x^p)^(1/p); p=1 is sum pooling, p=inf max pooling."""
  if norm_type == float("inf"):
    return max_pool(x, kernel_size, stride, ceil_mode=ceil_mode)
  if norm_type <= 0:
    raise ValueError(f"norm_type={norm_type!r} must be > 0")
  x = jnp.asarray(x)
  dims = _geometry(x, kernel_size, stride, 0, 1, ceil_mode)
  window, strides, pads, _ = _window_args(dims)
  s = lax.reduce_window(jnp.power(x, norm_type), np.array(0, x.dtype), lax.add, window, strides, pads)
  return jnp.power(s, 1.0 / norm_type)


def global_avg_pool(x):
  """Mean over all spatial dims: (N, *spatial, C) -> (N, C)."""
  return jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))


def global_max_pool(x):
  """Max over all spatial dims: (N, *spatial, C) -> (N, C)."""
  return jnp.max(x, axis=tuple(range(1, x.ndim - 1)))
