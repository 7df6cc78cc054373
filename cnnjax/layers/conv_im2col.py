"""'im2col' convolution: patches gathered by hand, then one matrix product.

The K = prod(kernel_spatial) strided slices of the padded input (one per kernel tap, the same slices 'direct'
uses) are stacked into a patch tensor (N, *out_spatial, K, C), i.e. the (N*Ho*Wo, K*C) "column" matrix of
im2col, and contracted with the kernel reshaped to (K*C, O) in a single dot (a batched one, over groups, for
grouped convolutions). No lax.conv_general_dilated_patches: the gather is explicit slicing.
"""
import itertools

from jax import numpy as jnp

from cnnjax.layers._conv_spec import ConvSpec, grouped_einsum, pad_input, spatial_labels
from cnnjax.layers.conv_direct import tap_slice


def patches(spec: ConvSpec, x):
  """(N, *out_spatial, K, C): the input values each output position sees, tap by tap (row-major taps)."""
  xp = pad_input(spec, x)
  taps = list(itertools.product(*(range(k) for k in spec.kernel_spatial)))
  return jnp.stack([tap_slice(spec, xp, t) for t in taps], axis=-2)


def conv_im2col(spec: ConvSpec, x, w):
  cols = patches(spec, x)
  k = cols.shape[-2]
  wk = w.reshape((k,) + w.shape[-2:])
  sp = spatial_labels(spec.nd)
  return grouped_einsum(spec, cols, f"n{sp}kc", wk, "kco", f"n{sp}o")
