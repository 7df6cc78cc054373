"""Linen wrappers around the hand-written layers."""
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp
from jax import lax

from cnnjax.layers import cpu_fast
from cnnjax.layers.conv import conv_general_dilated
from cnnjax.layers._conv_spec import make_spec
from cnnjax.layers.impl_plan import Resolution, record, resolve_impl
from cnnjax.layers.norm import local_response_norm
from cnnjax.layers.pool import avg_pool, max_pool

default_kernel_init = nn.initializers.lecun_normal()


class Conv(nn.Module):
  """Drop-in for `flax.linen.Conv` (same parameter names, shapes and initialisers), NHWC/HWIO, whose
  convolution is computed by `cnnjax.layers.conv_general_dilated(..., impl=...)` with the implementation
  `impl_plan.resolve_impl(impl, spec)` picks for this layer (e.g. lax for a strided layer under 'winograd'; under
  'auto' lax on GPU/TPU and on CPU what autotune.py measured on this machine). 'xla' is plain lax everywhere."""
  features: int
  kernel_size: Sequence[int]
  strides: Any = 1
  padding: Any = "SAME"
  input_dilation: Any = 1
  kernel_dilation: Any = 1
  feature_group_count: int = 1
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32
  precision: Any = None
  kernel_init: Callable = default_kernel_init
  bias_init: Callable = nn.initializers.zeros_init()
  impl: str = "xla"     # cnnjax.layers.IMPLS: 'xla' (plain lax), 'auto', or a hand-written one

  @nn.compact
  def __call__(self, x):
    ks = tuple(self.kernel_size)
    nd = len(ks)
    tup = lambda v: (v,) * nd if isinstance(v, int) else tuple(v)
    in_features = x.shape[-1]
    if in_features % self.feature_group_count:
      raise ValueError(f"input features {in_features} not divisible by feature_group_count "
                       f"{self.feature_group_count}")
    kernel = self.param("kernel", self.kernel_init, ks + (in_features // self.feature_group_count, self.features),
                        self.param_dtype)
    dtype = self.dtype or jnp.result_type(x, kernel)
    x, kernel = x.astype(dtype), kernel.astype(dtype)
    padding = self.padding
    if not isinstance(padding, str):
      padding = [(p, p) if isinstance(p, int) else tuple(p) for p in
                 (padding if isinstance(padding, (list, tuple)) else [padding] * nd)]
      if len(padding) == 1 and nd > 1:
        padding = padding * nd
    spatial = "".join("DHW"[3 - nd:])
    strides, lhs_dil, rhs_dil = tup(self.strides), tup(self.input_dilation), tup(self.kernel_dilation)
    dn = lax.conv_dimension_numbers(x.shape, kernel.shape, (f"N{spatial}C", f"{spatial}IO", f"N{spatial}C"))
    spec = make_spec(x, kernel, strides, padding, lhs_dil, rhs_dil, dn, self.feature_group_count,
                     precision=self.precision)
    impl, reason = resolve_impl(self.impl, spec)
    record(Resolution("/".join(self.scope.path), self.impl, impl, reason))
    if impl in cpu_fast.PATHS:  # x and kernel are already canonical (NHWC, HWIO)
      return self._add_bias(cpu_fast.conv(impl, spec, x, kernel), dtype)
    y = conv_general_dilated(x, kernel, strides, padding, lhs_dilation=lhs_dil, rhs_dilation=rhs_dil,
                             dimension_numbers=dn, feature_group_count=self.feature_group_count,
                             precision=self.precision, impl=impl)
    return self._add_bias(y, dtype)

  def _add_bias(self, y, dtype):
    if self.use_bias:
      bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
      y = y + jnp.reshape(bias.astype(dtype), (1,) * (y.ndim - 1) + (-1,))  # as flax's Conv: the same program
    return y


class MaxPool(nn.Module):
  """`pool.max_pool` as a module (no parameters)."""
  kernel_size: Any
  stride: Any = None
  padding: Any = 0
  dilation: Any = 1
  ceil_mode: bool = False

  def __call__(self, x):
    return max_pool(x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode)


class AvgPool(nn.Module):
  """`pool.avg_pool` as a module (no parameters)."""
  kernel_size: Any
  stride: Any = None
  padding: Any = 0
  ceil_mode: bool = False
  count_include_pad: bool = True

  def __call__(self, x):
    return avg_pool(x, self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad)


class LRN(nn.Module):
  """`norm.local_response_norm` as a module (AlexNet defaults: size 5, alpha 1e-4, beta 0.75, k 2)."""
  size: int = 5
  alpha: float = 1e-4
  beta: float = 0.75
  k: float = 2.0

  def __call__(self, x):
    return local_response_norm(x, self.size, self.alpha, self.beta, self.k)
