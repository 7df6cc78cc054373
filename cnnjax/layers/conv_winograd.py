"""'winograd' convolution: Winograd minimal filtering F(2x2, 3x3) and F(4x4, 3x3) (Lavin & Gray, CVPR 2016).

F(m, 3) computes m outputs of a 1-D correlation with a 3-tap filter g from an input tile d of alpha = m + 2
values with alpha multiplications instead of 3m:

  y = A^T [ (G g) . (B^T d) ]          (. elementwise; B^T: alpha x alpha, G: alpha x 3, A^T: m x alpha)

Nesting it along every spatial axis gives F(m x m, 3 x 3) in 2-D (and F(m^3, 3^3) in 3-D):

  Y = A^T [ (G g G^T) . (B^T d B) ] A.

With many channels the elementwise product becomes, for each of the alpha^2 tile positions (a, b), a matrix
product over channels: M[a, b] = V[a, b] (tiles x C) @ U[a, b] (C x O), where V = B^T d B for every input tile and
U = G g G^T for every (input, output) feature pair. F(4x4, 3x3) does 36 products per 16 outputs instead of 144
(2.25 instead of 9 multiplications per output and channel pair); F(2x2, 3x3) does 16 per 4.

Implementation. The input is padded so that the tiles (stride m, overlapping by 2) cover the output; each
transform is applied one spatial axis at a time as fixed linear combinations of strided slices (the non-zero
entries of B^T and A^T), which XLA fuses into a few memory-bound loops; the alpha^n matrix products are one
batched dot_general. The VJP is hand-written: the input gradient of a 3x3 stride-1 convolution is another one
(flipped kernel, in/out features swapped, padding 2 - p), computed with the same transforms; the kernel gradient
is a sum over tiles of products in the Winograd domain, G^T (sum V^T (A dY A^T)) G. Only for kernels of size 3 in every
spatial dim, stride 1, no input or kernel dilation
(padding, groups and dimension_numbers are free); anything else raises ValueError here, while the
`Conv` module runs such layers with lax instead (impl_plan.resolve_impl).

Accuracy. The transforms have entries up to 5 (B^T) and 8 (A^T) for F(4, 3), so float32 rounding errors grow by
roughly one decimal digit over direct convolution (measured: ~1e-6 relative to the output's scale, see
tests/test_conv.py); F(2, 3)'s transforms (entries 0, +-1, 1/2) are nearly exact. Low-precision inputs are
transformed in float32.
"""
import dataclasses
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from cnnjax.layers._conv_spec import ConvSpec, grouped_einsum, pad_input, spatial_labels

# (B^T, G, A^T) for F(m, 3), interpolation points 0, +-1 (m = 2) and 0, +-1, +-2 (m = 4), plus infinity.
MATRICES = {
    2: (np.array([[1, 0, -1, 0],
                  [0, 1, 1, 0],
                  [0, -1, 1, 0],
                  [0, 1, 0, -1]], np.float64),
        np.array([[1, 0, 0],
                  [1 / 2, 1 / 2, 1 / 2],
                  [1 / 2, -1 / 2, 1 / 2],
                  [0, 0, 1]], np.float64),
        np.array([[1, 1, 1, 0],
                  [0, 1, -1, -1]], np.float64)),
    4: (np.array([[4, 0, -5, 0, 1, 0],
                  [0, -4, -4, 1, 1, 0],
                  [0, 4, -4, -1, 1, 0],
                  [0, -2, -1, 2, 1, 0],
                  [0, 2, -1, -2, 1, 0],
                  [0, 4, 0, -5, 0, 1]], np.float64),
        np.array([[1 / 4, 0, 0],
                  [-1 / 6, -1 / 6, -1 / 6],
                  [-1 / 6, 1 / 6, -1 / 6],
                  [1 / 24, 1 / 12, 1 / 6],
                  [1 / 24, -1 / 12, 1 / 6],
                  [0, 0, 1]], np.float64),
        np.array([[1, 1, 1, 1, 1, 0],
                  [0, 1, -1, 2, -2, 0],
                  [0, 1, 1, 4, 4, 0],
                  [0, 1, -1, 8, -8, 1]], np.float64)),
}
TILES = tuple(MATRICES)


def winograd_limits(spec: ConvSpec) -> list:
  """What keeps `spec` from Winograd F(m x m, 3 x 3): [] for 3x3 (size 3 in every spatial dim), stride-1,
  undilated convolutions."""
  bad = []
  if any(k != 3 for k in spec.kernel_spatial):
    bad.append(f"kernel spatial size {spec.kernel_spatial}")
  if any(s != 1 for s in spec.strides):
    bad.append(f"window_strides={spec.strides}")
  if any(d != 1 for d in spec.lhs_dilation):
    bad.append(f"lhs_dilation={spec.lhs_dilation}")
  if any(d != 1 for d in spec.rhs_dilation):
    bad.append(f"rhs_dilation={spec.rhs_dilation}")
  return bad


def check_winograd(spec: ConvSpec, m: int) -> None:
  if m not in MATRICES:
    raise ValueError(f"winograd_tile={m!r} is not one of {TILES} (F(2x2, 3x3) or F(4x4, 3x3))")
  bad = winograd_limits(spec)
  if bad:
    raise ValueError("impl='winograd' computes only 3x3 (size 3 in every spatial dim), stride-1, undilated "
                     f"convolutions; got {', '.join(bad)}. Use impl='direct', 'im2col' or 'fft' for this one.")
  if not jnp.issubdtype(spec.compute_dtype, jnp.inexact):
    raise TypeError(f"impl='winograd' needs a floating or complex dtype, got {spec.compute_dtype}")


def _lincomb(coefs, arrays):
  """sum_j coefs[j] * arrays[j], skipping zeros and multiplications by +-1."""
  out = None
  for c, a in zip(coefs, arrays):
    if c == 0:
      continue
    if out is None:
      out = a if c == 1 else (-a if c == -1 else a * float(c))
    elif c == 1:
      out = out + a
    elif c == -1:
      out = out - a
    else:
      out = out + a * float(c)
  return out


def transform_kernel(w, m: int):
  """U = G g G^T along every spatial axis: (3, ..., 3, I, O) -> (alpha^n, I, O)."""
  g_mat = jnp.asarray(MATRICES[m][1], w.dtype)
  nd = w.ndim - 2
  for d in range(nd):
    w = jnp.moveaxis(jnp.tensordot(g_mat, w, axes=([1], [d]), precision=lax.Precision.HIGHEST), 0, d)
  return w.reshape((-1,) + w.shape[nd:])


def _tile_transform(x, mat, m: int, tiles):
  """out[i] = sum_j mat[i, j] x[tile * m + j] along every spatial axis, for each tile: (N, *spatial, C) ->
  (rows^n, N, *tiles, C). With B^T (rows alpha, alpha taps) it is the input transform of overlapping tiles;
  with A (alpha rows, m taps) the adjoint of the output transform on non-overlapping tiles."""
  nd = x.ndim - 2
  parts = {(): x}
  for d in range(nd):
    new = {}
    for idx, arr in parts.items():
      slices = [lax.slice_in_dim(arr, j, j + (tiles[d] - 1) * m + 1, stride=m, axis=1 + d)
                for j in range(mat.shape[1])]
      for i in range(mat.shape[0]):
        new[idx + (i,)] = _lincomb(mat[i], slices)
    parts = new
  return jnp.stack([parts[idx] for idx in itertools.product(range(mat.shape[0]), repeat=nd)])


def transform_input(xp, m: int, tiles):
  """V = B^T d B for every tile: (N, *(t*m + 2), C) -> (alpha^n, N, *tiles, C)."""
  return _tile_transform(xp, MATRICES[m][0], m, tiles)


def kernel_transform_adjoint(du, m: int, nd: int):
  """dg = G^T dU G along every spatial axis (the adjoint of `transform_kernel`): (alpha^n, I, O) -> (3,.., I, O)."""
  g_t = jnp.asarray(MATRICES[m][1].T, du.dtype)
  du = du.reshape((m + 2,) * nd + du.shape[1:])
  for d in range(nd):
    du = jnp.moveaxis(jnp.tensordot(g_t, du, axes=([1], [d]), precision=lax.Precision.HIGHEST), 0, d)
  return du


def transform_output(mm, m: int, nd: int):
  """Y = A^T M A for every tile: (alpha^n, N, *tiles, O) -> (N, *(tiles*m), O)."""
  at = MATRICES[m][2]
  alpha = m + 2
  parts = {idx: mm[k] for k, idx in enumerate(itertools.product(range(alpha), repeat=nd))}
  for d in range(nd):
    new = {}
    for idx in itertools.product(*([range(m)] * (d + 1) + [range(alpha)] * (nd - d - 1))):
      srcs = [parts[idx[:d] + (a,) + idx[d + 1:]] for a in range(alpha)]
      new[idx] = _lincomb(at[idx[d]], srcs)
    parts = new
  y = jnp.stack([parts[idx] for idx in itertools.product(range(m), repeat=nd)])
  tiles = y.shape[2:-1]
  y = y.reshape((m,) * nd + y.shape[1:])
  perm = [nd, *itertools.chain.from_iterable((nd + 1 + d, d) for d in range(nd)), 2 * nd + 1]
  y = jnp.transpose(y, perm)
  return y.reshape((y.shape[0],) + tuple(t * m for t in tiles) + (y.shape[-1],))


def conv_winograd(spec: ConvSpec, x, w, m: int = 4):
  """The convolution `spec` of canonical x (N, *spatial, C) and w (3, .., 3, I, O) by F(m x m, 3 x 3); its VJP is
  hand-written (`_winograd_bwd`) unless the spec groups the batch (then autodiff through the transforms)."""
  check_winograd(spec, m)
  if spec.batch_group_count > 1:
    return _forward(spec, x, w, m)[0]
  return _winograd(spec, m, x, w)


def _tiles(spec: ConvSpec, m: int):
  return tuple(-(-o // m) for o in spec.out_spatial)


def _forward(spec: ConvSpec, x, w, m: int):
  """(y, V): the output and the transformed input tiles."""
  nd = spec.nd
  xp = pad_input(spec, x)
  tiles = _tiles(spec, m)
  extra = [t * m + 2 - s for t, s in zip(tiles, xp.shape[1:-1])]
  if any(extra):
    xp = lax.pad(xp, jnp.array(0, xp.dtype), [(0, 0, 0)] + [(0, e, 0) for e in extra] + [(0, 0, 0)])
  v = transform_input(xp, m, tiles)                      # (A, N, *tiles, C)
  u = transform_kernel(w, m)                             # (A, I, O)
  sp = spatial_labels(nd)
  mm = grouped_einsum(spec, v, f"an{sp}c", u, "aco", f"an{sp}o")
  y = transform_output(mm, m, nd)
  if any(t * m != o for t, o in zip(tiles, spec.out_spatial)):
    y = lax.slice(y, [0] * y.ndim, (y.shape[0],) + tuple(spec.out_spatial) + (y.shape[-1],))
  return y, v


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _winograd(spec, m, x, w):
  return _forward(spec, x, w, m)[0]


def _winograd_fwd(spec, m, x, w):
  y, v = _forward(spec, x, w, m)
  return y, (v, w)


def _winograd_bwd(spec, m, res, dy):
  """Input gradient: the 3x3 stride-1 convolution of dy with the flipped kernel (in/out features swapped per
  group), padded by 2 - the forward padding, itself by Winograd. Kernel gradient in the Winograd domain:
  dM = A dY A^T per tile, dU = sum over tiles and batch of V^T dM, dw = G^T dU G."""
  v, w = res
  nd, g = spec.nd, spec.feature_group_count
  tiles = _tiles(spec, m)
  extra = [t * m - o for t, o in zip(tiles, spec.out_spatial)]
  dyp = lax.pad(dy, jnp.array(0, dy.dtype), [(0, 0, 0)] + [(0, e, 0) for e in extra] + [(0, 0, 0)])
  dm = _tile_transform(dyp, MATRICES[m][2].T, m, tiles)            # (A, N, *tiles, O)
  sp = spatial_labels(nd)
  du = grouped_einsum(spec, v, f"an{sp}c", dm, f"an{sp}o", "aco")  # (A, I, O)
  dw = kernel_transform_adjoint(du, m, nd)
  i, o = w.shape[-2:]
  wt = jnp.flip(w, axis=tuple(range(nd))).reshape(w.shape[:nd] + (i, g, o // g))
  wt = jnp.swapaxes(wt, nd, nd + 2).reshape(w.shape[:nd] + (o // g, g * i))
  back = dataclasses.replace(spec, in_shape=spec.out_shape, kernel_shape=wt.shape, out_shape=spec.in_shape,
                             padding=tuple((2 - lo, 2 - hi) for lo, hi in spec.padding))
  dx = _forward(back, dy, wt, m)[0]
  return dx, dw.astype(w.dtype)


_winograd.defvjp(_winograd_fwd, _winograd_bwd)
