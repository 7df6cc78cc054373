"""Pooling with PyTorch MaxPool/AvgPool semantics on channels-last inputs (N, *spatial, C).

Placeholder implementations on lax.reduce_window (issue 3 replaces them and adds ceil_mode, dilation,
return_indices, lp_pool). Signatures are final.
"""
from jax import lax
import jax.numpy as jnp


def _tuple(v, n):
  return (v,) * n if isinstance(v, int) else tuple(v)


def max_pool(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
  n = x.ndim - 2
  k, s, p = _tuple(kernel_size, n), _tuple(stride if stride is not None else kernel_size, n), _tuple(padding, n)
  pads = ((0, 0),) + tuple((q, q) for q in p) + ((0, 0),)
  return lax.reduce_window(x, -jnp.inf, lax.max, (1,) + k + (1,), (1,) + s + (1,), pads)


def avg_pool(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None):
  n = x.ndim - 2
  k, s, p = _tuple(kernel_size, n), _tuple(stride if stride is not None else kernel_size, n), _tuple(padding, n)
  pads = ((0, 0),) + tuple((q, q) for q in p) + ((0, 0),)
  total = lax.reduce_window(x, 0.0, lax.add, (1,) + k + (1,), (1,) + s + (1,), pads)
  size = 1
  for q in k:
    size *= q
  return total / size


def global_avg_pool(x):
  return jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))


def global_max_pool(x):
  return jnp.max(x, axis=tuple(range(1, x.ndim - 1)))
