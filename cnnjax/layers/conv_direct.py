"""'direct' convolution: a sum over kernel taps of strided input slices times the tap's weights.

For a tap t = (t_1, ..., t_n) of the kernel, the inputs it meets are the padded (and lhs-dilated) input sampled at
t * rhs_dilation + stride * (output position): one strided slice of shape (N, *out_spatial, C). The tap's
contribution is that slice contracted with the tap's (I, O) weight matrix, so

  y = sum_t  slice_t(pad(x)) @ w[t]          (kh * kw matrix products of (N*Ho*Wo, C) x (C, O) for 2-D)

This is the definition of cross-correlation written as loops over the kernel only; autodiff gives the
gradients (the transpose of a slice is a pad, the transpose of the contraction is another contraction).
"""
import itertools

import jax.numpy as jnp
from jax import lax

from cnnjax.layers._conv_spec import ConvSpec, grouped_einsum, pad_input, spatial_labels


def tap_slice(spec: ConvSpec, xp, tap):
  """The strided slice of the padded input that kernel tap `tap` multiplies: (N, *out_spatial, C)."""
  start = [0] + [t * d for t, d in zip(tap, spec.rhs_dilation)] + [0]
  limit = ([xp.shape[0]] + [s + (o - 1) * st + 1 for s, o, st in zip(start[1:-1], spec.out_spatial, spec.strides)]
           + [xp.shape[-1]])
  return lax.slice(xp, start, limit, (1,) + spec.strides + (1,))


def conv_direct(spec: ConvSpec, x, w):
  xp = pad_input(spec, x)
  sp = spatial_labels(spec.nd)
  y = None
  for tap in itertools.product(*(range(k) for k in spec.kernel_spatial)):
    term = grouped_einsum(spec, tap_slice(spec, xp, tap), f"n{sp}c", w[tap], "co", f"n{sp}o")
    y = term if y is None else y + term
  if y is None:  # a kernel with a zero-size spatial dim
    y = jnp.zeros(spec.out_shape, spec.compute_dtype)
  return y
