"""AlexNet: Krizhevsky, Sutskever & Hinton 2012, "ImageNet classification with deep convolutional neural
networks", Sec. 3 and Fig. 2, and torchvision's single-column variant ("one weird trick", Krizhevsky 2014).

`alexnet` is the published two-column net: conv1 96x11x11/4, LRN, overlapping 3x3/2 max-pool; conv2 256x5x5
in two groups (each column sees only its own 48 maps), LRN, pool; conv3 384x3x3 across both columns; conv4
384x3x3 and conv5 256x3x3 in two groups; pool; fc 4096, 4096 with dropout 0.5; 1000-way output. LRN: n=5,
k=2, alpha=1e-4, beta=0.75 (Sec. 3.3). The paper's "224x224" input only works out as 227x227 (55x55 after
conv1), which is what it expects: 60,965,224 parameters ("60 million", Sec. 1).
`alexnet_owt` is torchvision's `alexnet` (64-192-384-256-256 filters, no LRN, no groups, an adaptive 6x6
average pool before the classifier): 61,100,840 parameters at 224x224, torchvision's published count.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from cnnjax.errors import ConfigError
from cnnjax.layers import Conv, MaxPool, local_response_norm, logs_conv_impls
from cnnjax.models.pooling import adaptive_avg_pool
from cnnjax.models.registry import register


class AlexNet(nn.Module):
  """`variant='paper'` (two columns, LRN) or `'owt'` (torchvision's one-column net); see the module docstring."""
  num_classes: int = 1000
  variant: str = "paper"
  dropout_rate: float = 0.5
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  conv_impl: str = "xla"

  def check(self):
    """Raises ConfigError for option values that cannot build the network (config.validate calls it)."""
    if self.variant not in ("paper", "owt"):
      raise ConfigError(f"config.model.variant={self.variant!r} is invalid: one of ('paper', 'owt')")

  @nn.compact
  @logs_conv_impls
  def __call__(self, x, *, train: bool):
    self.check()
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, impl=self.conv_impl)
    x = x.astype(self.dtype)
    pool = lambda y: MaxPool(3, 2)(y)
    if self.variant == "paper":
      lrn = lambda y: local_response_norm(y, 5, 1e-4, 0.75, 2.0)
      x = pool(lrn(nn.relu(Conv(96, (11, 11), 4, "VALID", name="conv1", **kw)(x))))
      x = pool(lrn(nn.relu(Conv(256, (5, 5), 1, [(2, 2)] * 2, feature_group_count=2, name="conv2", **kw)(x))))
      x = nn.relu(Conv(384, (3, 3), 1, [(1, 1)] * 2, name="conv3", **kw)(x))
      x = nn.relu(Conv(384, (3, 3), 1, [(1, 1)] * 2, feature_group_count=2, name="conv4", **kw)(x))
      x = pool(nn.relu(Conv(256, (3, 3), 1, [(1, 1)] * 2, feature_group_count=2, name="conv5", **kw)(x)))
    else:
      x = pool(nn.relu(Conv(64, (11, 11), 4, [(2, 2)] * 2, name="conv1", **kw)(x)))
      x = pool(nn.relu(Conv(192, (5, 5), 1, [(2, 2)] * 2, name="conv2", **kw)(x)))
      x = nn.relu(Conv(384, (3, 3), 1, [(1, 1)] * 2, name="conv3", **kw)(x))
      x = nn.relu(Conv(256, (3, 3), 1, [(1, 1)] * 2, name="conv4", **kw)(x))
      x = pool(nn.relu(Conv(256, (3, 3), 1, [(1, 1)] * 2, name="conv5", **kw)(x)))
      x = adaptive_avg_pool(x, (6, 6))
    x = x.reshape(x.shape[0], -1)
    dense = lambda n, name: nn.Dense(n, dtype=self.dtype, param_dtype=self.param_dtype, name=name)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = nn.relu(dense(4096, "fc6")(x))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = nn.relu(dense(4096, "fc7")(x))
    return dense(self.num_classes, "fc8")(x).astype(jnp.float32)


register("alexnet", AlexNet, variant="paper")
register("alexnet_owt", AlexNet, variant="owt")
