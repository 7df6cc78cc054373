"""Argument checking and canonical layout shared by the hand-written convolutions.

`conv_general_dilated` accepts exactly the arguments of `jax.lax.conv_general_dilated`. `make_spec` checks them
(raising errors that name the offending value) and resolves them into a hashable `ConvSpec`; every
implementation then works on one canonical layout:

  input  x: (N, *spatial, C)        channels last, spatial dims in the order of the kernel's spec string
  kernel w: (*kernel_spatial, I, O) I = C // feature_group_count
  output y: (N // batch_group_count, *out_spatial, O)

`to_canonical` / `from_canonical` are the transposes between the caller's dimension_numbers and this layout (no-ops
for NHWC/HWIO/NHWC). Low-precision floats (bfloat16, float16) are computed in float32 and rounded once at the end,
as XLA's CPU convolution does, so results agree with lax to within one unit in the last place of the output.

Groups. With feature_group_count G, input features split into G contiguous groups of I = C/G and output features
into G contiguous groups of O/G; output group g sees only input group g. With batch_group_count B, the batch splits
into B contiguous groups of N/B (batch index b * N/B + n) and output feature group b (of O/B) sees batch group b;
the output batch is N/B. (XLA allows at most one of the two to exceed 1.) `grouped_einsum` implements both for
any contraction by reshaping the grouped axes.
"""
import dataclasses
import operator
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax import lax

_LOW_PRECISION = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


@dataclasses.dataclass(frozen=True)
class ConvSpec:
  """A checked convolution problem in the canonical layout (hashable: usable as a static jit argument)."""
  in_shape: tuple        # (N, *spatial, C), canonical
  kernel_shape: tuple    # (*kernel_spatial, I, O), canonical
  out_shape: tuple       # (N // batch_group_count, *out_spatial, O), canonical
  strides: tuple
  padding: tuple         # ((lo, hi), ...) applied to the lhs-dilated input; may be negative (cropping)
  lhs_dilation: tuple
  rhs_dilation: tuple
  feature_group_count: int
  batch_group_count: int
  precision: Any
  compute_dtype: Any
  out_dtype: Any
  lhs_perm: tuple        # caller's lhs -> canonical
  rhs_perm: tuple        # caller's rhs -> canonical
  out_perm: tuple        # canonical output -> caller's layout

  @property
  def nd(self) -> int:
    return len(self.strides)

  @property
  def kernel_spatial(self) -> tuple:
    return self.kernel_shape[:-2]

  @property
  def out_spatial(self) -> tuple:
    return self.out_shape[1:-1]

  @property
  def dilated_kernel(self) -> tuple:
    return tuple((k - 1) * d + 1 for k, d in zip(self.kernel_spatial, self.rhs_dilation))

  @property
  def padded_spatial(self) -> tuple:
    """Spatial size of the input after lhs dilation and padding."""
    return tuple((s - 1) * ld + 1 + lo + hi if s > 0 else lo + hi
                 for s, ld, (lo, hi) in zip(self.in_shape[1:-1], self.lhs_dilation, self.padding))


def _positive_ints(value, n: int, name: str) -> tuple:
  if value is None:
    return (1,) * n
  try:
    t = tuple(operator.index(v) for v in value)
  except TypeError:
    raise ValueError(f"{name}={value!r} must be None or a sequence of {n} positive ints") from None
  if len(t) != n or any(v < 1 for v in t):
    raise ValueError(f"{name}={value!r} must be a sequence of {n} positive ints (one per spatial dimension)")
  return t


def dimension_numbers_of(lhs_shape, rhs_shape, dimension_numbers) -> lax.ConvDimensionNumbers:
  """lax's parsing of dimension_numbers, re-raised as a ValueError that names the value."""
  if len(lhs_shape) != len(rhs_shape):
    raise ValueError(f"lhs and rhs must have the same rank, got shapes {tuple(lhs_shape)} and {tuple(rhs_shape)}")
  if len(lhs_shape) < 3:
    raise ValueError(f"lhs must have rank >= 3 (batch, feature and at least one spatial dimension), "
                     f"got shape {tuple(lhs_shape)}")
  try:
    dn = lax.conv_dimension_numbers(lhs_shape, rhs_shape, dimension_numbers)
  except (TypeError, ValueError) as e:
    raise ValueError(f"dimension_numbers={dimension_numbers!r} is invalid for lhs shape {tuple(lhs_shape)} and "
                     f"rhs shape {tuple(rhs_shape)}: {e}") from None
  r = len(lhs_shape)
  for name, perm in zip(("lhs_spec", "rhs_spec", "out_spec"), dn):
    if sorted(perm) != list(range(r)):
      raise ValueError(f"dimension_numbers={dimension_numbers!r} is invalid: {name}={tuple(perm)} is not a "
                       f"permutation of range({r})")
  return dn


def make_spec(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None, dimension_numbers=None,
              feature_group_count=1, batch_group_count=1, precision=None,
              preferred_element_type=None) -> ConvSpec:
  """Checks lax.conv_general_dilated's arguments; raises ValueError/TypeError naming the offending value."""
  lhs_shape, rhs_shape = tuple(np.shape(lhs)), tuple(np.shape(rhs))
  dn = dimension_numbers_of(lhs_shape, rhs_shape, dimension_numbers)
  lhs_spec, rhs_spec, out_spec = dn
  nd = len(lhs_shape) - 2

  try:
    strides = tuple(operator.index(s) for s in window_strides)
  except TypeError:
    raise ValueError(f"window_strides={window_strides!r} must be a sequence of {nd} positive ints") from None
  if len(strides) != nd or any(s < 1 for s in strides):
    raise ValueError(f"window_strides={window_strides!r} must be a sequence of {nd} positive ints")
  lhs_dil = _positive_ints(lhs_dilation, nd, "lhs_dilation")
  rhs_dil = _positive_ints(rhs_dilation, nd, "rhs_dilation")

  for name, v in (("feature_group_count", feature_group_count), ("batch_group_count", batch_group_count)):
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
      raise ValueError(f"{name}={v!r} must be a positive int")
  fg, bg = int(feature_group_count), int(batch_group_count)
  if fg > 1 and bg > 1:
    raise ValueError(f"at most one of feature_group_count={fg} and batch_group_count={bg} may exceed 1")

  # Canonical orders: (N, *spatial, C) and (*spatial, I, O); spatial order follows the rhs spec, as in lax.
  lhs_perm = (lhs_spec[0],) + tuple(lhs_spec[2:]) + (lhs_spec[1],)
  rhs_perm = tuple(rhs_spec[2:]) + (rhs_spec[1], rhs_spec[0])
  in_shape = tuple(lhs_shape[i] for i in lhs_perm)
  kernel_shape = tuple(rhs_shape[i] for i in rhs_perm)
  n, c = in_shape[0], in_shape[-1]
  i_feat, o_feat = kernel_shape[-2], kernel_shape[-1]

  _check_groups(fg, bg, lhs_shape, rhs_shape, n, c, i_feat, o_feat)

  kernel_spatial = kernel_shape[:-2]
  dilated_kernel = tuple((k - 1) * d + 1 if k > 0 else 0 for k, d in zip(kernel_spatial, rhs_dil))
  pads = _pads(padding, nd, in_shape, dilated_kernel, strides, lhs_dil)

  out_spatial = _out_spatial(in_shape, lhs_dil, pads, dilated_kernel, strides, kernel_spatial, rhs_dil)

  lhs_dtype, rhs_dtype = jnp.result_type(lhs), jnp.result_type(rhs)
  if lhs_dtype != rhs_dtype:
    raise TypeError(f"lhs and rhs must have the same dtype (as in lax.conv_general_dilated), got {lhs_dtype} "
                    f"and {rhs_dtype}")
  out_dtype = jnp.dtype(preferred_element_type) if preferred_element_type is not None else lhs_dtype
  compute_dtype = jnp.promote_types(lhs_dtype, out_dtype)
  if compute_dtype in _LOW_PRECISION:
    compute_dtype = jnp.dtype(jnp.float32)
  # out_perm maps canonical output axes (N, *spatial, O) to the caller's axes.
  canon_out_axes = (out_spec[0],) + tuple(out_spec[2:]) + (out_spec[1],)
  out_perm = tuple(int(i) for i in np.argsort(canon_out_axes))
  return ConvSpec(in_shape=in_shape, kernel_shape=kernel_shape,
                  out_shape=(n // bg,) + tuple(out_spatial) + (o_feat,), strides=strides, padding=pads,
                  lhs_dilation=lhs_dil, rhs_dilation=rhs_dil, feature_group_count=fg, batch_group_count=bg,
                  precision=_hashable_precision(precision), compute_dtype=compute_dtype, out_dtype=out_dtype,
                  lhs_perm=tuple(int(i) for i in lhs_perm), rhs_perm=tuple(int(i) for i in rhs_perm),
                  out_perm=out_perm)


def _check_groups(fg, bg, lhs_shape, rhs_shape, n, c, i_feat, o_feat) -> None:
  """feature_group_count / batch_group_count against the feature and batch sizes, as lax checks them."""
  if c % fg:
    raise ValueError(f"feature_group_count={fg} does not divide the input feature count {c} "
                     f"(lhs shape {lhs_shape})")
  if c // fg != i_feat:
    raise ValueError(f"the kernel's input feature count {i_feat} must equal input features {c} divided by "
                     f"feature_group_count={fg} (= {c // fg}); lhs shape {lhs_shape}, rhs shape {rhs_shape}")
  if o_feat % fg:
    raise ValueError(f"feature_group_count={fg} does not divide the kernel's output feature count {o_feat} "
                     f"(rhs shape {rhs_shape})")
  if n % bg:
    raise ValueError(f"batch_group_count={bg} does not divide the batch size {n} (lhs shape {lhs_shape})")
  if o_feat % bg:
    raise ValueError(f"batch_group_count={bg} does not divide the kernel's output feature count {o_feat} "
                     f"(rhs shape {rhs_shape})")


def _pads(padding, nd, in_shape, dilated_kernel, strides, lhs_dil):
  """((low, high), ...) per spatial dimension from a padding string or explicit pairs."""
  if isinstance(padding, str):
    if any(d != 1 for d in lhs_dil):
      raise ValueError(f"string padding={padding!r} is not supported with lhs_dilation={lhs_dil} (transposed "
                       "convolution), as in lax: give explicit (low, high) pairs")
    if padding.upper() not in ("SAME", "SAME_LOWER", "VALID"):
      raise ValueError(f"padding={padding!r} must be 'SAME', 'SAME_LOWER', 'VALID' or a sequence of {nd} "
                       "(low, high) pairs")
    pads = tuple(tuple(p) for p in lax.padtype_to_pads(in_shape[1:-1], dilated_kernel, strides, padding.upper()))
  else:
    try:
      pads = tuple((operator.index(lo), operator.index(hi)) for lo, hi in padding)
    except (TypeError, ValueError):
      raise ValueError(f"padding={padding!r} must be 'SAME', 'SAME_LOWER', 'VALID' or a sequence of {nd} "
                       "(low, high) int pairs") from None
    if len(pads) != nd:
      raise ValueError(f"padding={padding!r} has {len(pads)} (low, high) pairs; the convolution has {nd} "
                       "spatial dimensions")
  return tuple((int(lo), int(hi)) for lo, hi in pads)


def _out_spatial(in_shape, lhs_dil, pads, dilated_kernel, strides, kernel_spatial, rhs_dil):
  """The output's spatial sizes; an error where padding crops everything or the window does not fit."""
  out_spatial = []
  for d, (s, ld, (lo, hi), kd, st) in enumerate(zip(in_shape[1:-1], lhs_dil, pads, dilated_kernel, strides)):
    padded = ((s - 1) * ld + 1 if s > 0 else 0) + lo + hi
    if padded < 0:
      raise ValueError(f"padding={pads} crops more than the input has in spatial dimension {d}: input size {s} "
                       f"(lhs_dilation {ld}) with padding {(lo, hi)} leaves {padded}")
    if kd > padded:
      raise ValueError(f"the window is larger than the padded input in spatial dimension {d}: kernel size "
                       f"{kernel_spatial[d]} dilated by {rhs_dil[d]} spans {kd}, but the input of size {s} "
                       f"(lhs_dilation {ld}, padding {(lo, hi)}) spans {padded}")
    out_spatial.append((padded - kd) // st + 1)
  return out_spatial


def _hashable_precision(precision):
  if isinstance(precision, list):
    return tuple(precision)
  return precision


def to_canonical(spec: ConvSpec, lhs, rhs, cast: bool = True):
  """The caller's arrays in (N, *spatial, C) and (*kernel, I, O), cast to the compute dtype if `cast`."""
  x = jnp.transpose(lhs, spec.lhs_perm) if spec.lhs_perm != tuple(range(lhs.ndim)) else lhs
  w = jnp.transpose(rhs, spec.rhs_perm) if spec.rhs_perm != tuple(range(rhs.ndim)) else rhs
  return (x.astype(spec.compute_dtype), w.astype(spec.compute_dtype)) if cast else (x, w)


def from_canonical(spec: ConvSpec, y):
  """The canonical (N', *out_spatial, O) result in the caller's layout and dtype."""
  y = y.astype(spec.out_dtype)
  return jnp.transpose(y, spec.out_perm) if spec.out_perm != tuple(range(y.ndim)) else y


def pad_input(spec: ConvSpec, x, value=0):
  """Input dilation (interior zeros) and (possibly negative) padding of the spatial dims, in one lax.pad."""
  config = [(0, 0, 0)] + [(lo, hi, ld - 1) for (lo, hi), ld in zip(spec.padding, spec.lhs_dilation)] + [(0, 0, 0)]
  if all(c == (0, 0, 0) for c in config):
    return x
  return lax.pad(x, jnp.array(value, x.dtype), config)


def grouped_einsum(spec: ConvSpec, lhs, lhs_labels: str, rhs, rhs_labels: str, out_labels: str):
  """einsum that applies the spec's feature or batch grouping.

  Labels: in lhs, 'n' is the batch axis and 'c' the feature axis; in rhs, 'c' is the kernel's input-feature axis
  and 'o' its output-feature axis; out has 'n' and 'o'. Other labels are shared or contracted as in any einsum.
  Feature groups split lhs 'c' into (g, c) and rhs/out 'o' into (g, o); batch groups split lhs 'n' into (g, n)
  and rhs/out 'o' into (g, o). Accumulates in the compute dtype at the spec's precision.
  """
  fg, bg = spec.feature_group_count, spec.batch_group_count
  kw = dict(precision=spec.precision, preferred_element_type=spec.compute_dtype)
  if fg == 1 and bg == 1:
    return jnp.einsum(f"{lhs_labels},{rhs_labels}->{out_labels}", lhs, rhs, **kw)
  groups = fg if fg > 1 else bg
  split = "c" if fg > 1 else "n"
  ax = lhs_labels.index(split)
  lhs = lhs.reshape(lhs.shape[:ax] + (groups, lhs.shape[ax] // groups) + lhs.shape[ax + 1:])
  lhs_labels = lhs_labels.replace(split, "g" + split)
  ax = rhs_labels.index("o")
  rhs = rhs.reshape(rhs.shape[:ax] + (groups, rhs.shape[ax] // groups) + rhs.shape[ax + 1:])
  rhs_labels = rhs_labels.replace("o", "go")
  out = jnp.einsum(f"{lhs_labels},{rhs_labels}->{out_labels.replace('o', 'go')}", lhs, rhs, **kw)
  ax = out_labels.index("o")
  return out.reshape(out.shape[:ax] + (out.shape[ax] * out.shape[ax + 1],) + out.shape[ax + 2:])


def spatial_labels(nd: int) -> str:
  """Distinct einsum labels for nd spatial axes (avoiding n, c, o, g and the letters the impls use)."""
  return "hwdxyz"[:nd] if nd <= 6 else "".join(chr(ord("A") + i) for i in range(nd))
