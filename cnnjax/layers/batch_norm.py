"""Batch normalisation (Ioffe & Szegedy 2015) whose statistics and gradient can reduce with matrix products.

Same variables, defaults and results as `flax.linen.BatchNorm` (running averages in float32, the biased batch
variance E[x^2] - E[x]^2), so checkpoints and summaries do not change. Why: XLA's CPU reductions over the
leading axes of an NHWC activation (mean and variance forward; sum(dy) and sum(dy * x_hat) backward) run
2.5-4x slower than the same sums written as `ones @ x` (benchmarks/RESULTS.md), and batch norm was a quarter
of a ResNet-18 CIFAR train step. That is a CPU speed path (cpu_fast.colsum), taken with `impl='auto'` on CPU
only; 'xla' (the default) and other backends use plain reductions: there XLA fuses them well, and on TPU a
float32 dot would need HIGHEST precision.

`frozen_statistics(pattern)`: while a model is traced inside it, every BatchNorm whose parameters `pattern` all
selects (a regex over '/'-joined paths such as 'stage1_block1/BatchNorm_0/scale', cnnjax.param_paths's rule,
as `frozen`'s) runs as in evaluation, also
in training: it normalises with its running statistics and leaves them unchanged (a frozen layer, see
cnnjax/train/transfer.py).
"""
import contextlib
import functools
from typing import Any, Callable, List

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from cnnjax import param_paths
from cnnjax.layers.cpu_fast import colsum

IMPLS = ("xla", "auto")


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def batch_norm_train(x, scale, bias, epsilon, auto=False):
  """Training-mode batch norm of a (M, C) float32 matrix over its rows: (y, batch mean, biased batch var).
  `auto`: the sums as matrix products on CPU (cpu_fast.colsum)."""
  return _forward(x, scale, bias, epsilon, auto)[0]


def _forward(x, scale, bias, epsilon, auto=False):
  m = x.shape[0]
  mean = colsum(x, auto) / m
  var = jnp.maximum(colsum(x * x, auto) / m - mean * mean, 0.0)
  r = lax.rsqrt(var + epsilon)
  y = (x - mean) * (r * scale) + bias
  return (y, mean, var), (x, mean, r, scale)


def _backward(epsilon, auto, res, cts):
  x, mean, r, scale = res
  dy, dmean, dvar = cts
  m = x.shape[0]
  xc = x - mean
  xhat = xc * r
  dbias = colsum(dy, auto)
  dscale = colsum(dy * xhat, auto)
  dx = (scale * r) * (dy - (dbias + xhat * dscale) / m) + (dmean + 2.0 * dvar * xc) / m
  return dx, dscale, dbias


batch_norm_train.defvjp(_forward, _backward)


_FROZEN: List[str] = []   # the patterns of the active frozen_statistics() blocks


@contextlib.contextmanager
def frozen_statistics(pattern: str):
  """Inside the block, batch norms whose parameters all match `pattern` use their running statistics (see the
  module docstring); '' freezes none. A trace-time switch: enter it inside the function that is jitted."""
  _FROZEN.append(pattern)
  try:
    yield
  finally:
    _FROZEN.pop()


def _frozen(path, names) -> bool:
  return bool(names) and any(all(param_paths.matches(p, param_paths.path_str((*path, n))) for n in names)
                             for p in _FROZEN)


class BatchNorm(nn.Module):
  """Drop-in for `flax.linen.BatchNorm` over the last (feature) axis, batch statistics over all others;
  in a jit over a sharded batch they are global-batch statistics."""
  use_running_average: bool = False
  momentum: float = 0.99
  epsilon: float = 1e-5
  dtype: Any = None
  param_dtype: Any = jnp.float32
  use_bias: bool = True
  use_scale: bool = True
  scale_init: Callable = nn.initializers.ones
  bias_init: Callable = nn.initializers.zeros
  impl: str = "xla"   # 'auto': the sums as matrix products on CPU (cpu_fast.py); 'xla': jnp.sum

  @nn.compact
  def __call__(self, x):
    if self.impl not in IMPLS:
      raise ValueError(f"BatchNorm impl={self.impl!r} is not one of {IMPLS}")
    c = x.shape[-1]
    ra_mean = self.variable("batch_stats", "mean", lambda s: jnp.zeros(s, jnp.float32), (c,))
    ra_var = self.variable("batch_stats", "var", lambda s: jnp.ones(s, jnp.float32), (c,))
    scale = self.param("scale", self.scale_init, (c,), self.param_dtype) if self.use_scale else None
    bias = self.param("bias", self.bias_init, (c,), self.param_dtype) if self.use_bias else None
    dtype = self.dtype or jnp.result_type(x, *(p for p in (scale, bias) if p is not None))
    s = jnp.ones((c,), jnp.float32) if scale is None else scale.astype(jnp.float32)
    b = jnp.zeros((c,), jnp.float32) if bias is None else bias.astype(jnp.float32)
    x32 = x.astype(jnp.float32)
    names = [n for n, on in (("scale", self.use_scale), ("bias", self.use_bias)) if on]
    if self.use_running_average or _frozen(self.path, names):
      y = (x32 - ra_mean.value) * (lax.rsqrt(ra_var.value + self.epsilon) * s) + b
      return y.astype(dtype)
    y, mean, var = batch_norm_train(x32.reshape(-1, c), s, b, self.epsilon, self.impl == "auto")
    if not self.is_initializing():
      ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * lax.stop_gradient(mean)
      ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * lax.stop_gradient(var)
    return y.reshape(x.shape).astype(dtype)
