"""'fft' convolution through jnp.fft, for large kernels.

After input dilation and padding (xp, spatial size S) and kernel dilation (wd, spatial size Kd), the stride-1
output is the valid cross-correlation  c[y] = sum_k xp[y + k] wd[k],  y = 0 .. S - Kd. With the kernel flipped,
f[k] = wd[Kd - 1 - k], this is the linear convolution (xp * f)[y + Kd - 1]. A circular convolution of period
L >= S equals the linear one at every index n >= Kd - 1 (no term wraps around), so

  c[y] = IFFT_L( FFT_L(xp) . FFT_L(f) )[y + Kd - 1]

per (input feature, output feature) pair; the sum over input features is a matrix product per frequency
(batched over the L_1 * ... * (L_n/2 + 1) frequencies of a real FFT). L is the smallest 2-3-5-smooth size >= S
(fast FFT lengths). Strides subsample the stride-1 result. Cost ~ N*C*O*prod(L) complex MACs plus the FFTs,
independent of the kernel size: it wins over 'direct' when the kernel is large.
"""
import dataclasses

import jax.numpy as jnp
from jax import lax

from cnnjax.layers._conv_spec import ConvSpec, grouped_einsum, pad_input, spatial_labels


def next_fast_len(n: int) -> int:
  """Smallest integer >= n whose only prime factors are 2, 3 and 5."""
  if n <= 1:
    return 1
  best = 1 << (n - 1).bit_length()
  p5 = 1
  while p5 < best:
    p35 = p5
    while p35 < best:
      m = p35
      while m < n:
        m *= 2
      best = min(best, m)
      p35 *= 3
    p5 *= 5
  return best


def conv_fft(spec: ConvSpec, x, w):
  if not jnp.issubdtype(spec.compute_dtype, jnp.inexact):
    raise TypeError(f"impl='fft' needs a floating or complex dtype, got {spec.compute_dtype}")
  nd = spec.nd
  xp = pad_input(spec, x)
  kd = spec.dilated_kernel
  if any(d != 1 for d in spec.rhs_dilation):
    w = lax.pad(w, jnp.array(0, w.dtype), [(0, 0, d - 1) for d in spec.rhs_dilation] + [(0, 0, 0)] * 2)
  w = jnp.flip(w, axis=tuple(range(nd)))
  size = tuple(next_fast_len(s) for s in xp.shape[1:-1])
  x_axes, w_axes = tuple(range(1, nd + 1)), tuple(range(nd))
  real = not jnp.issubdtype(spec.compute_dtype, jnp.complexfloating)
  fftn, ifftn = (jnp.fft.rfftn, jnp.fft.irfftn) if real else (jnp.fft.fftn, jnp.fft.ifftn)
  xf = fftn(xp, s=size, axes=x_axes)
  wf = fftn(w, s=size, axes=w_axes)
  sp = spatial_labels(nd)
  spec_c = dataclasses.replace(spec, compute_dtype=xf.dtype)  # accumulate in complex
  yf = grouped_einsum(spec_c, xf, f"n{sp}c", wf, f"{sp}co", f"n{sp}o")
  y = ifftn(yf, s=size, axes=x_axes)
  start = [0] + [k - 1 for k in kd] + [0]
  ends = [k - 1 + (o - 1) * s + 1 for k, o, s in zip(kd, spec.out_spatial, spec.strides)]
  limit = [y.shape[0]] + ends + [y.shape[-1]]
  return lax.slice(y, start, limit, (1,) + spec.strides + (1,)).astype(spec.compute_dtype)
