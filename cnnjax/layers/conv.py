"""Convolutions with the signature and semantics of `jax.lax.conv_general_dilated`, computed by hand.

`conv_general_dilated(..., impl=...)` takes exactly lax's arguments and returns lax's result (shape, dtype and
values to rounding), computed by one of:

  'direct'    sum over kernel taps of strided input slices times the tap's (I, O) weights (conv_direct.py)
  'im2col'    patches gathered by explicit slicing, then one matrix product (conv_im2col.py)
  'fft'       products of FFTs (jnp.fft), for large kernels (conv_fft.py)
  'winograd'  Winograd minimal filtering F(4x4, 3x3) (default) or F(2x2, 3x3) (`winograd_tile=2`) for 3x3,
              stride-1, undilated convolutions; anything else raises ValueError (conv_winograd.py)
  'xla'       lax.conv_general_dilated itself, the reference, on every backend
  'auto'      lax on GPU and TPU; on CPU plain lax or one of the paths of cpu_fast.py (lax with a materialised
              input, polyphase, a dot for 1x1, Winograd), as measured on this machine (autotune.py)

All of them handle 1-, 2- and 3-D (in fact n-D) spatial dims; 'SAME', 'SAME_LOWER', 'VALID' and explicit (low,
high) padding, asymmetric or negative; window strides; input dilation (transposed convolution); kernel dilation
(atrous); feature groups (grouped and depthwise) and batch groups; any dimension_numbers; any float dtype
(bfloat16/float16 are computed in float32 and rounded once, like XLA on CPU). Gradients come from autodiff through
the hand-written computation, except Winograd's, which has a hand-written VJP (conv_winograd.py); tests/test_conv.py
checks the VJPs against lax's.

Arguments are checked before anything is traced, and errors name the value (see `_conv_spec.make_spec`): groups
that don't divide the channels, a window larger than the padded input (lax would return an empty array; here it
is an error), malformed padding/strides/dilations, bad dimension_numbers, mismatched dtypes.

What "convolution" means here. Deep-learning convolutions (lax, flax, PyTorch) compute the cross-correlation

  y[n, o, p] = sum_{c, k} x[n, c, p * stride + k] w[o, c, k]       (no kernel flip)

while the textbook discrete convolution s(n) = sum_m a(m) b(n - m) flips one operand. `convolve` below is the
textbook one (numpy.convolve / scipy.signal.convolve); it is a correlation with the kernel flipped:

  convolve(a, b, 'valid') == conv_general_dilated(a[None, None], flip(b)[None, None], (1,)*n, 'VALID')[0, 0]

and, the other way round, a conv layer with kernel w is `convolve(x, flip(w), 'valid')` per channel pair.
"""
import functools

import jax
import jax.numpy as jnp
from jax import lax

from cnnjax.layers import autotune, cpu_fast
from cnnjax.layers._conv_spec import ConvSpec, from_canonical, make_spec, to_canonical
from cnnjax.layers.conv_direct import conv_direct
from cnnjax.layers.conv_fft import conv_fft
from cnnjax.layers.conv_im2col import conv_im2col
from cnnjax.layers.conv_winograd import check_winograd, conv_winograd

IMPLS = ("direct", "im2col", "fft", "winograd", "xla", "auto")

_IMPL_FNS = {"direct": conv_direct, "im2col": conv_im2col, "fft": conv_fft}


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1, precision=None,
                         preferred_element_type=None, *, impl="direct", winograd_tile=4):
  """`jax.lax.conv_general_dilated` computed by the hand-written implementation `impl` (one of `IMPLS`).

  The positional and keyword arguments up to `preferred_element_type` are lax's (see its docstring).
  `impl`: 'direct' | 'im2col' | 'fft' | 'winograd' | 'xla' | 'auto'. `winograd_tile`: output tile m of F(m x m, 3 x 3),
  4 (default) or 2; only read by impl='winograd'.
  """
  if impl not in IMPLS:
    raise ValueError(f"impl={impl!r} is not one of {IMPLS}")
  lhs, rhs = jnp.asarray(lhs), jnp.asarray(rhs)
  spec = make_spec(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                   feature_group_count, batch_group_count, precision, preferred_element_type)
  if impl == "auto":
    impl, _ = autotune.resolve_auto(spec)
    if impl in cpu_fast.PATHS:
      return _conv_cpu(lhs, rhs, spec=spec, path=impl)
  if impl == "xla":
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                    dimension_numbers, feature_group_count, batch_group_count, precision,
                                    preferred_element_type)
  if impl == "winograd":
    check_winograd(spec, winograd_tile)
  return _conv(lhs, rhs, spec=spec, impl=impl, tile=winograd_tile)


@functools.partial(jax.jit, static_argnames=("spec", "impl", "tile"))
def _conv(lhs, rhs, *, spec: ConvSpec, impl: str, tile: int):
  x, w = to_canonical(spec, lhs, rhs)
  if impl == "winograd":
    y = conv_winograd(spec, x, w, tile)
  else:
    y = _IMPL_FNS[impl](spec, x, w)
  return from_canonical(spec, y)


@functools.partial(jax.jit, static_argnames=("spec", "path"))
def _conv_cpu(lhs, rhs, *, spec: ConvSpec, path: str):
  x, w = to_canonical(spec, lhs, rhs, cast=False)
  return from_canonical(spec, cpu_fast.conv(path, spec, x, w))


MODES = ("full", "same", "valid")


def convolve(a, b, mode="full", *, impl="direct", precision=lax.Precision.HIGHEST):
  """Textbook N-D discrete linear convolution  s[n] = sum_m a[m] b[n - m]  (scipy.signal.convolve semantics).

  mode 'full': every n where the operands overlap, shape a.shape + b.shape - 1. 'same': the centre of 'full' with
  a's shape (starting at index (b.shape - 1) // 2 of 'full'). 'valid': only where one operand lies entirely within
  the other, shape |a.shape - b.shape| + 1; one operand must be at least as large as the other in every dim.

  In 1-D the result equals numpy.convolve(a, b, mode), which treats the longer operand as the signal: for 'same'
  with len(b) > len(a) numpy (and so this function, for 1-D inputs) returns max(len(a), len(b)) values where
  scipy.signal.convolve returns len(a). That is the only difference between the two conventions.

  Computed as a cross-correlation of a with the flipped b (see the module docstring) by
  `conv_general_dilated(..., impl=impl)`, a single feature, padded by b.shape - 1 for 'full'.
  """
  if mode not in MODES:
    raise ValueError(f"mode={mode!r} is not one of {MODES}")
  a, b = jnp.asarray(a), jnp.asarray(b)
  if a.ndim != b.ndim:
    raise ValueError(f"a and b must have the same number of dimensions, got shapes {a.shape} and {b.shape}")
  if a.ndim == 0:
    raise ValueError("convolve needs arrays of at least one dimension, got scalars")
  if a.size == 0 or b.size == 0:
    raise ValueError(f"convolve needs non-empty arrays, got shapes {a.shape} and {b.shape}")
  dtype = jnp.result_type(a, b)
  if not jnp.issubdtype(dtype, jnp.inexact):
    dtype = jnp.result_type(dtype, jnp.float32)
  a, b = a.astype(dtype), b.astype(dtype)
  if a.ndim == 1 and b.shape[0] > a.shape[0]:
    a, b = b, a  # numpy.convolve: the longer operand is the signal (convolution commutes)
  elif mode == "valid":
    if not all(i >= j for i, j in zip(a.shape, b.shape)):
      if all(j >= i for i, j in zip(a.shape, b.shape)):
        a, b = b, a
      else:
        raise ValueError(f"mode='valid' needs one operand at least as large as the other in every dimension, "
                         f"got shapes {a.shape} and {b.shape}")
  kb = b.shape
  if mode == "full":
    pads = [(k - 1, k - 1) for k in kb]
  elif mode == "same":
    pads = [(k // 2, (k - 1) // 2) for k in kb]
  else:
    pads = [(0, 0)] * a.ndim
  y = conv_general_dilated(a[None, None], jnp.flip(b)[None, None], (1,) * a.ndim, pads, precision=precision,
                           impl=impl)
  return y[0, 0]
