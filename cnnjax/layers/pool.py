"""Pooling with PyTorch's MaxPool/AvgPool/LPPool semantics on channels-last inputs (N, *spatial, C).

Output size per spatial dim (PyTorch): out = floor((H + 2p - d(k-1) - 1 [+ s - 1 if ceil_mode]) / s) + 1, and
with ceil_mode the last window is dropped if it would start in the right padding ((out-1)s >= H + p). The
windows that ceil_mode adds past the padded input are filled with -inf (max) or zeros that are not counted
(average).

Padding. As in torch 2.13 (max, avg and their 1-D/2-D/3-D variants alike): padding p <= k // 2 in every dim,
half the kernel size *without* dilation (checked by running torch: k=3, d=2, p=2 is refused although the dilated
window spans 5). Anything larger raises ValueError. A max-pool window whose dilated taps all fall in the padding
(e.g. k=2, d=3, p=1 on 2 elements) is refused too: torch returns -inf there with an index outside the input.

Max pooling sends the gradient to exactly one element per window, the one `return_indices` reports (a flat index
into the input's spatial dims, like PyTorch): the first maximum in row-major window order on ties; if the window
holds NaN, the value is NaN and the index is the window's last NaN (torch's CPU kernel updates on every NaN).
Undilated pools without indices run as one `reduce_window`, whose gradient (XLA's select-and-scatter) picks the
same element on ties; dilated ones gather at the indices, because lax's max-pool gradient has no window dilation.
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
    if pi > ki // 2:
      raise ValueError(f"padding={p} is too large for kernel_size={k}: padding may be at most kernel_size // 2 "
                       f"= {ki // 2} (half the kernel, dilation not counted, as torch 2.13 requires)")
    span = di * (ki - 1) + 1
    if size + 2 * pi < span:
      raise ValueError(f"the window ({span}, kernel {ki} dilation {di}) is larger than the padded input "
                       f"({size} + 2*{pi}) of shape {x.shape}")
    out = (size + 2 * pi - span + ((si - 1) if ceil_mode else 0)) // si + 1
    if ceil_mode and (out - 1) * si >= size + pi:
      out -= 1
    empty = [o for o in range(out) if not any(0 <= o * si - pi + j * di < size for j in range(ki))]
    if empty:
      raise ValueError(f"window {empty[0]} (kernel {ki}, stride {si}, padding {pi}, dilation {di}) covers only "
                       f"padding of an input of size {size} (shape {x.shape}): choose less padding or dilation")
    extra = max(0, (out - 1) * si + span - (size + 2 * pi))
    dims.append((ki, si, pi, di, extra, out))
  return dims


def _window_args(dims):
  return ((1,) + tuple(g[0] for g in dims) + (1,), (1,) + tuple(g[1] for g in dims) + (1,),
          ((0, 0),) + tuple((g[2], g[2] + g[4]) for g in dims) + ((0, 0),),
          (1,) + tuple(g[3] for g in dims) + (1,))


def _max_init(dtype):
  return np.array(-np.inf if jnp.issubdtype(dtype, jnp.floating) else jnp.iinfo(dtype).min, dtype)


def _argmax(x, window, strides, pads, wdil):
  """Flat spatial index of each window's maximum: NaN above everything (the last NaN wins), else the first of
  equal maxima. A total order on (value, index), so the reduction's order does not matter; index -1 marks the
  padding and loses to every element."""
  spatial = x.shape[1:-1]
  idx = jnp.broadcast_to(jnp.arange(math.prod(spatial), dtype=jnp.int32).reshape((1, *spatial, 1)), x.shape)

  def pick(a, b):
    (va, ia), (vb, ib) = a, b
    nan_a, nan_b = jnp.isnan(va), jnp.isnan(vb)
    b_better = jnp.where(nan_b, ~nan_a | (ib > ia), ~nan_a & ((vb > va) | ((vb == va) & (ib < ia))))
    take_b = (ia < 0) | ((ib >= 0) & b_better)
    return jnp.where(take_b, vb, va), jnp.where(take_b, ib, ia)
  _, ind = lax.reduce_window((x, idx), (_max_init(x.dtype), np.int32(-1)), pick, window, strides, pads,
                             window_dilation=wdil)
  return ind


def _take(x, ind):
  """x at the flat spatial indices `ind` (N, *out, C); its gradient is a scatter-add to those elements."""
  flat = x.reshape(x.shape[0], -1, x.shape[-1])
  got = jnp.take_along_axis(flat, ind.reshape(ind.shape[0], -1, ind.shape[-1]), axis=1)
  return got.reshape(ind.shape)


def max_pool(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
  """torch.nn.MaxPool{1,2,3}d on (N, *spatial, C). With return_indices, also the flat spatial index of each
  maximum (see the module docstring for ties and NaN)."""
  x = jnp.asarray(x)
  dims = _geometry(x, kernel_size, stride, padding, dilation, ceil_mode)
  window, strides, pads, wdil = _window_args(dims)
  if not return_indices and all(g[3] == 1 for g in dims):
    return lax.reduce_window(x, _max_init(x.dtype), lax.max, window, strides, pads)
  ind = _argmax(lax.stop_gradient(x), window, strides, pads, wdil)
  y = _take(x, ind)
  return (y, ind) if return_indices else y


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
  """torch.nn.functional.lp_pool{1,2}d (any number of spatial dims): (sum over the window of x^p)^(1/p).

  As torch computes it: avg_pool(x^p) times the kernel's element count, so with ceil_mode a partial window's sum
  is scaled by (kernel elements / elements inside). p=1 is sum pooling (negative sums stay negative), p=inf is
  max |x|, p=-inf min |x|. A window whose sum is zero gives 0 with zero gradient (torch: sign(s) * relu(|s|)),
  where the plain formula's gradient would be NaN (p > 1) or 1 (p = 1).
  """
  x = jnp.asarray(x)
  if abs(norm_type) == float("inf"):
    a = x * jnp.sign(x)  # |x| with torch's derivative sign(x): 0 at x = 0 (jnp.abs has 1 there)
    sign = 1 if norm_type > 0 else -1
    return sign * max_pool(sign * a, kernel_size, stride, ceil_mode=ceil_mode)
  if not norm_type > 0:
    raise ValueError(f"norm_type={norm_type!r} must be > 0, inf or -inf")
  k = _tuple(kernel_size, x.ndim - 2, "kernel_size")
  s = avg_pool(jnp.power(x, norm_type), kernel_size, stride, 0, ceil_mode) * math.prod(k)
  nonzero = s != 0
  return jnp.where(nonzero, jnp.power(jnp.where(nonzero, s, 1), 1.0 / norm_type), 0)


def global_avg_pool(x):
  """Mean over all spatial dims: (N, *spatial, C) -> (N, C)."""
  return jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))


def global_max_pool(x):
  """Max over all spatial dims: (N, *spatial, C) -> (N, C)."""
  return jnp.max(x, axis=tuple(range(1, x.ndim - 1)))
