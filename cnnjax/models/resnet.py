"""ResNets of He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016).

ImageNet models follow the paper's Table 1 (`resnet18` ... `resnet152`), with the stride of a bottleneck's
downsampling block on its 3x3 convolution as torchvision does ("v1.5"; `stride_on_3x3=False` gives the paper's
original placement on the first 1x1). CIFAR models follow Section 4.2: a 3x3 stem of 16 filters, three stages
of n blocks with 16/32/64 filters on 32x32/16x16/8x8 maps, global average pooling and a linear classifier:
6n+2 layers (`resnet20` n=3 ... `resnet110` n=18), parameter counts of Table 6 with option A shortcuts.

Ablation switches: `residual=False` gives the paper's plain nets (no shortcut at all, so no projection
parameters), `norm` in ('batch', 'group', 'layer', 'none') with a conv bias when there is no norm, `shortcut`
'A' (identity, zero-padded channels, strided subsampling), 'B' (projection only where shapes change) or 'C'
(projection everywhere), `zero_init_residual` (last norm scale of each block starts at 0, Goyal et al. 2017; without a
norm, the last
convolution's kernel; no effect on plain nets),
`width` (multiplies every stage's filter count).
"""
import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from cnnjax.errors import ConfigError
from cnnjax.layers import Conv, MaxPool, logs_conv_impls
from cnnjax.models.common import check_norm, he_normal, make_norm
from cnnjax.models.registry import register

SHORTCUTS = ("A", "B", "C")


class _Block(nn.Module):
  """Basic (two 3x3) or bottleneck (1x1, 3x3, 1x1 with 4x expansion) residual block."""
  features: int
  strides: int
  bottleneck: bool
  conv: Any
  norm: Any
  residual: bool
  shortcut: str
  zero_init_residual: bool
  stride_on_3x3: bool

  @nn.compact
  def __call__(self, x):
    out_features = self.features * (4 if self.bottleneck else 1)
    norm = self.norm
    zero_init = self.zero_init_residual and self.residual  # a plain block has no skip to carry the signal
    last_scale = nn.initializers.zeros if zero_init else nn.initializers.ones

    def conv_norm(y, feats, k, s, last=False):
      kinit = nn.initializers.zeros if (last and zero_init and norm is None) else he_normal
      y = self.conv(feats, (k, k), strides=s, padding=[(k // 2, k // 2)] * 2, kernel_init=kinit)(y)
      if norm is not None:
        y = norm(scale_init=last_scale if last else nn.initializers.ones)(y)
      return y

    if self.bottleneck:
      s1, s3 = (1, self.strides) if self.stride_on_3x3 else (self.strides, 1)
      y = nn.relu(conv_norm(x, self.features, 1, s1))
      y = nn.relu(conv_norm(y, self.features, 3, s3))
      y = conv_norm(y, out_features, 1, 1, last=True)
    else:
      y = nn.relu(conv_norm(x, self.features, 3, self.strides))
      y = conv_norm(y, out_features, 3, 1, last=True)

    if not self.residual:
      return nn.relu(y)
    changes = self.strides != 1 or x.shape[-1] != out_features
    if self.shortcut == "C" or (self.shortcut == "B" and changes):
      sc = self.conv(out_features, (1, 1), strides=self.strides, padding="VALID", kernel_init=he_normal)(x)
      if norm is not None:
        sc = norm()(sc)
    elif changes:  # option A: parameter-free identity, subsampled, extra channels zero
      sc = x[:, ::self.strides, ::self.strides, :]
      extra = out_features - x.shape[-1]
      sc = jnp.pad(sc, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))
    else:
      sc = x
    return nn.relu(y + sc)


class ResNet(nn.Module):
  """ResNet for ImageNet (`stem='imagenet'`) or CIFAR (`stem='cifar'`); see the module docstring."""
  num_classes: int
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  stage_features: Sequence[int] = (64, 128, 256, 512)
  bottleneck: bool = False
  stem: str = "imagenet"
  residual: bool = True
  norm: str = "batch"
  shortcut: str = "B"
  zero_init_residual: bool = False
  width: float = 1.0
  stride_on_3x3: bool = True
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  conv_impl: str = "xla"

  def check(self):
    """Raises ConfigError for option values that cannot build the network (config.validate calls it)."""
    check_norm(self.norm)
    if self.shortcut not in SHORTCUTS:
      raise ConfigError(f"config.model.shortcut={self.shortcut!r} is invalid: one of {SHORTCUTS}")
    if self.stem not in ("imagenet", "cifar"):
      raise ConfigError(f"config.model.stem={self.stem!r} is invalid: one of ('imagenet', 'cifar')")

  @nn.compact
  @logs_conv_impls
  def __call__(self, x, *, train: bool):
    self.check()
    norm = make_norm(self.norm, train=train, dtype=self.dtype, param_dtype=self.param_dtype,
                     conv_impl=self.conv_impl)
    conv = functools.partial(Conv, use_bias=norm is None, dtype=self.dtype, param_dtype=self.param_dtype,
                             impl=self.conv_impl)
    feats = [max(1, int(round(f * self.width))) for f in self.stage_features]
    x = x.astype(self.dtype)
    if self.stem == "imagenet":
      x = conv(feats[0], (7, 7), strides=2, padding=[(3, 3), (3, 3)], kernel_init=he_normal, name="stem_conv")(x)
    else:
      x = conv(feats[0], (3, 3), strides=1, padding=[(1, 1), (1, 1)], kernel_init=he_normal, name="stem_conv")(x)
    if norm is not None:
      x = norm(name="stem_norm")(x)
    x = nn.relu(x)
    if self.stem == "imagenet":
      x = MaxPool(3, 2, 1, name="stem_pool")(x)
    for i, (n, f) in enumerate(zip(self.stage_sizes, feats)):
      for j in range(n):
        x = _Block(f, 2 if (i > 0 and j == 0) else 1, self.bottleneck, conv, norm, self.residual, self.shortcut,
                   self.zero_init_residual, self.stride_on_3x3, name=f"stage{i + 1}_block{j + 1}")(x)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype, name="head")(x)
    return x.astype(jnp.float32)


for _depth, _sizes, _bottleneck in [(18, (2, 2, 2, 2), False), (34, (3, 4, 6, 3), False),
                                    (50, (3, 4, 6, 3), True), (101, (3, 4, 23, 3), True),
                                    (152, (3, 8, 36, 3), True)]:
  register(f"resnet{_depth}", ResNet, stage_sizes=_sizes, bottleneck=_bottleneck)

for _depth in (20, 32, 44, 56, 110):
  _n = (_depth - 2) // 6
  register(f"resnet{_depth}", ResNet, stage_sizes=(_n, _n, _n), stem="cifar", stage_features=(16, 32, 64),
           shortcut="A")
