"""Pieces shared by the model families: the norm switch and the He initialiser."""
import math
from typing import Any, Callable, Optional

import flax.linen as nn

from cnnjax.errors import ConfigError
from cnnjax.layers import BatchNorm

NORMS = ("batch", "group", "layer", "none")

# He et al. 2015 (torchvision's kaiming_normal_(mode='fan_out')): keeps deep plain nets trainable without BN.
he_normal = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def check_norm(norm: str) -> None:
  if norm not in NORMS:
    raise ConfigError(f"config.model.norm={norm!r} is invalid: one of {NORMS}")


def norm_impl(conv_impl: str) -> str:
  """Batch norm's sums for a model's conv_impl: the CPU matrix-product path under 'auto', plain otherwise."""
  return "auto" if conv_impl == "auto" else "xla"


def make_norm(norm: str, *, train: bool, dtype: Any, param_dtype: Any,
              conv_impl: str = "xla") -> Optional[Callable[..., nn.Module]]:
  """A constructor `f(name=..., scale_init=...)` for the chosen normalisation, or None for norm='none'.

  'batch': `cnnjax.layers.BatchNorm` (flax's; momentum 0.9, eps 1e-5 as in torchvision; with conv_impl='auto'
  its CPU sums are matrix products, `norm_impl`); its statistics are over the global batch
  when the step is jitted over a sharded batch. 'group': GroupNorm with gcd(C, 32) groups (32 as in Wu & He
  2018, fewer when C is small). 'layer': normalise over H, W and C per example (GroupNorm with one group).
  """
  check_norm(norm)
  if norm == "none":
    return None
  if norm == "batch":
    def f(name=None, scale_init=nn.initializers.ones):
      return BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                       param_dtype=param_dtype, scale_init=scale_init, impl=norm_impl(conv_impl), name=name)
    return f

  class _Group(nn.Module):
    scale_init: Callable = nn.initializers.ones

    @nn.compact
    def __call__(self, x):
      groups = 1 if norm == "layer" else math.gcd(x.shape[-1], 32)
      return nn.GroupNorm(num_groups=groups, epsilon=1e-5, dtype=dtype, param_dtype=param_dtype,
                          scale_init=self.scale_init, name="norm")(x)

  def g(name=None, scale_init=nn.initializers.ones):
    return _Group(scale_init=scale_init, name=name)
  return g
