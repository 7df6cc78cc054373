"""GoogLeNet (Inception v1): Szegedy et al. 2015, "Going deeper with convolutions", Table 1 and Fig. 3.

`layout='paper'`: Table 1 as published: convolutions with biases and ReLU, LRN after the first max-pool and after
the 3x3 stem convolution, nine inception modules (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj as in the
table), 7x7 average pooling, dropout 0.4, linear output; two auxiliary classifiers on inception 4a and 4d
(5x5/3 average pool, 1x1 conv 128, fc 1024, dropout 0.7, linear), active only in training, where the model
returns (logits, (aux1, aux2)) and the loop weights each auxiliary loss by `aux_loss_weight` (0.3, Sec. 5).
`layout='torchvision'`: torchvision's googlenet, whose weights can be imported: batch norm after every conv
(no conv bias, eps 1e-3), a 3x3 convolution in the "5x5" branch, no LRN, dropout 0.2, auxiliary heads with an
adaptive 4x4 pool; 6,624,904 parameters without the auxiliary heads (`aux_logits=False`), torchvision's count.
Max-pools round up (ceil mode) as in both, giving Table 1's 56/28/14/7 grids at 224x224.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from cnnjax.errors import ConfigError
from cnnjax.layers import AvgPool, BatchNorm, Conv, MaxPool, local_response_norm, logs_conv_impls
from cnnjax.models.common import norm_impl
from cnnjax.models.pooling import adaptive_avg_pool
from cnnjax.models.registry import register

# Table 1: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj.
INCEPTION = {"3a": (64, 96, 128, 16, 32, 32), "3b": (128, 128, 192, 32, 96, 64),
             "4a": (192, 96, 208, 16, 48, 64), "4b": (160, 112, 224, 24, 64, 64),
             "4c": (128, 128, 256, 24, 64, 64), "4d": (112, 144, 288, 32, 64, 64),
             "4e": (256, 160, 320, 32, 128, 128), "5a": (256, 160, 320, 32, 128, 128),
             "5b": (384, 192, 384, 48, 128, 128)}


class _ConvAct(nn.Module):
  """conv + ReLU (paper) or conv (no bias) + batch norm + ReLU (torchvision's BasicConv2d)."""
  features: int
  kernel: int
  stride: int = 1
  bn: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  conv_impl: str = "xla"

  @nn.compact
  def __call__(self, x, train: bool):
    p = self.kernel // 2
    x = Conv(self.features, (self.kernel,) * 2, self.stride, [(p, p)] * 2, use_bias=not self.bn, dtype=self.dtype,
             param_dtype=self.param_dtype, impl=self.conv_impl, name="conv")(x)
    if self.bn:
      x = BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-3, dtype=self.dtype,
                    param_dtype=self.param_dtype, impl=norm_impl(self.conv_impl), name="bn")(x)
    return nn.relu(x)


class _Inception(nn.Module):
  widths: tuple
  conv: Any
  five: int  # kernel of the "5x5" branch: 5 (paper) or 3 (torchvision)

  @nn.compact
  def __call__(self, x, train: bool):
    c1, r3, c3, r5, c5, pp = self.widths
    b1 = self.conv(c1, 1, name="b1")(x, train)
    b2 = self.conv(c3, 3, name="b2_3x3")(self.conv(r3, 1, name="b2_reduce")(x, train), train)
    b3 = self.conv(c5, self.five, name="b3_5x5")(self.conv(r5, 1, name="b3_reduce")(x, train), train)
    b4 = self.conv(pp, 1, name="b4_proj")(MaxPool(3, 1, 1)(x), train)
    return jnp.concatenate([b1, b2, b3, b4], axis=-1)


class _Aux(nn.Module):
  num_classes: int
  conv: Any
  torchvision: bool
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    x = adaptive_avg_pool(x, (4, 4)) if self.torchvision else AvgPool(5, 3)(x)
    x = self.conv(128, 1, name="conv")(x, train)
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(1024, dtype=self.dtype, param_dtype=self.param_dtype, name="fc1")(x))
    x = nn.Dropout(0.7, deterministic=not train)(x)
    return nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype, name="fc2")(x)


class GoogLeNet(nn.Module):
  """Inception v1; see the module docstring."""
  num_classes: int = 1000
  layout: str = "paper"
  aux_logits: bool = True
  dropout_rate: float = -1.0   # -1: the layout's (0.4 paper, 0.2 torchvision)
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  conv_impl: str = "xla"

  def check(self):
    """Raises ConfigError for option values that cannot build the network (config.validate calls it)."""
    if self.layout not in ("paper", "torchvision"):
      raise ConfigError(f"config.model.layout={self.layout!r} is invalid: one of ('paper', 'torchvision')")

  @nn.compact
  @logs_conv_impls
  def __call__(self, x, *, train: bool):
    self.check()
    tv = self.layout == "torchvision"

    def conv(features, kernel, stride=1, name=None):
      return _ConvAct(features, kernel, stride, bn=tv, dtype=self.dtype, param_dtype=self.param_dtype,
                      conv_impl=self.conv_impl, name=name)
    lrn = (lambda y: y) if tv else (lambda y: local_response_norm(y, 5, 1e-4, 0.75, 2.0))
    x = x.astype(self.dtype)
    x = conv(64, 7, 2, name="conv1")(x, train)
    x = lrn(MaxPool(3, 2, ceil_mode=True)(x))
    x = conv(64, 1, name="conv2_reduce")(x, train)
    x = lrn(conv(192, 3, name="conv2")(x, train))
    x = MaxPool(3, 2, ceil_mode=True)(x)
    aux = []
    for name in ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b"):
      if name in ("4a", "5a"):
        x = MaxPool(3 if name == "4a" or not tv else 2, 2, ceil_mode=True)(x)
      x = _Inception(INCEPTION[name], conv, 3 if tv else 5, name=f"inception{name}")(x, train)
      if self.aux_logits and name in ("4a", "4d"):
        head = _Aux(self.num_classes, conv, tv, self.dtype, self.param_dtype, name=f"aux_{name}")
        out = head(x, train)
        if train:
          aux.append(out.astype(jnp.float32))
    x = jnp.mean(x, axis=(1, 2))
    rate = self.dropout_rate if self.dropout_rate >= 0 else (0.2 if tv else 0.4)
    x = nn.Dropout(rate, deterministic=not train)(x)
    logits = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype, name="fc")(x)
    logits = logits.astype(jnp.float32)
    return (logits, tuple(aux)) if (train and aux) else logits


register("googlenet", GoogLeNet)
