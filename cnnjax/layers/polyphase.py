"""A strided convolution whose input gradient is computed by polyphase decomposition.

The input gradient of a stride-s convolution is a transposed convolution. XLA computes it as a stride-1
convolution over the output gradient dilated with s - 1 zeros between elements, so on CPU (no dilation-aware
kernel) s^d - 1 of every s^d multiplications are by zero: 51 GFLOP/s against 107 for the step as a whole in a
ResNet-18 CIFAR train step (benchmarks/RESULTS.md). Split by output phase instead: the input-gradient pixels
at positions s*i + a (a = 0..s-1 per spatial axis) receive only the kernel taps a, a + s, a + 2s, ..., so
each phase is a small stride-1 convolution of the undilated output gradient with that subset of taps, and
the phases are interleaved afterwards. Same multiplications as the forward pass, no zeros.
"""
import functools
import itertools

import jax
import jax.numpy as jnp
from jax import lax


def _conv(x, w, strides, padding):
  nd = x.ndim - 2
  sp = "DHW"[3 - nd:]
  return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=(f"N{sp}C", f"{sp}IO", f"N{sp}C"))


def polyphase_input_grad(dy, w, input_shape, strides, padding):
  """d(conv(x, w, strides, padding)) / dx applied to dy, for NHWC x, HWIO w (any number of spatial axes),
  explicit padding ((lo, hi), ...) (e.g. `_conv_spec.make_spec(...).padding`), no dilation, no groups; equal to
  `jax.vjp` of the convolution."""
  nd = len(strides)
  spatial = input_shape[1:-1]
  padded = [n + lo + hi for n, (lo, hi) in zip(spatial, padding)]
  # Phase p along an axis covers padded input positions s*i + p, i < n_i = ceil((padded - p) / s). Tap
  # k = p + s*t reaches it from output o = i - t: a stride-1 correlation of dy, padded by T_p - 1 on the left,
  # with the phase's taps in reverse order (transposed I/O).
  n_i = [-(-n // s) for n, s in zip(padded, strides)]  # phase 0 is the longest; others are cropped below
  phases = []
  for phase in itertools.product(*(range(s) for s in strides)):
    taps = tuple(slice(p, None, s) for p, s in zip(phase, strides))
    sub = w[taps]
    if any(t == 0 for t in sub.shape[:nd]):
      phases.append(jnp.zeros(dy.shape[:1] + tuple(n_i) + (w.shape[-2],), dy.dtype))
      continue
    sub = jnp.flip(sub, axis=tuple(range(nd))).swapaxes(-1, -2)
    pad = [(t - 1, n - o) for t, n, o in zip(sub.shape[:nd], n_i, dy.shape[1:-1])]
    phases.append(_conv(dy, sub, (1,) * nd, pad))
  # Interleave: (phases..., N, n_i..., C) -> (N, n_0, s_0, n_1, s_1, ..., C) -> crop to the padded input.
  stacked = jnp.stack(phases).reshape(tuple(strides) + phases[0].shape)
  order = [nd] + [x for a in range(nd) for x in (nd + 1 + a, a)] + [2 * nd + 1]
  full = stacked.transpose(order).reshape((dy.shape[0],) + tuple(n * s for n, s in zip(n_i, strides))
                                          + (w.shape[-2],))
  crop = (slice(None),) + tuple(slice(lo, lo + n) for (lo, _), n in zip(padding, spatial)) + (slice(None),)
  return full[crop]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def strided_conv(x, w, strides, padding):
  """`lax.conv_general_dilated(x, w, strides, padding)` for NHWC x and HWIO w, explicit padding, whose input
  gradient is `polyphase_input_grad`; the kernel gradient is lax's."""
  return _conv(x, w, strides, padding)


def _fwd(x, w, strides, padding):
  return _conv(x, w, strides, padding), (x, w)


def _bwd(strides, padding, res, dy):
  x, w = res
  dx = polyphase_input_grad(dy, w, x.shape, strides, padding)
  dw = jax.vjp(lambda k: _conv(x, k, strides, padding), w)[1](dy)[0]
  return dx.astype(x.dtype), dw


strided_conv.defvjp(_fwd, _bwd)

