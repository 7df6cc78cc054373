"""VGG: Simonyan & Zisserman 2015, "Very deep convolutional networks for large-scale image recognition",
every column of Table 1 (A, A-LRN, B, C, D, E), and torchvision's batch-norm variants.

3x3 convolutions (stride 1, pad 1) in five stages separated by 2x2/2 max-pools; C adds a 1x1 convolution at the
end of stages 3-5; A-LRN adds LRN after the first convolution (Sec. 2.1: AlexNet's LRN, n=5, k=2, alpha=1e-4,
beta=0.75); classifier fc 4096, 4096 (dropout 0.5), output. As torchvision, the last feature map is
average-pooled to 7x7 (a no-op at 224x224), so the classifier has Table 2's size at any input: 133, 133, 134,
138 and 144 million parameters for A, B, C, D, E. `batch_norm=True` adds batch norm after every convolution
(torchvision's vgg*_bn, conv biases kept). Aliases: vgg11 = A, vgg13 = B, vgg16 = D, vgg19 = E.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from cnnjax.errors import ConfigError
from cnnjax.layers import BatchNorm, Conv, MaxPool, local_response_norm, logs_conv_impls
from cnnjax.models.common import norm_impl
from cnnjax.models.pooling import adaptive_avg_pool
from cnnjax.models.registry import register

# Table 1: ints are 3x3 conv widths, "1x1:N" a 1x1 conv, "M" a max-pool, "LRN" local response normalisation.
COLUMNS = {
    "A": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "A-LRN": (64, "LRN", "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "B": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "C": (64, 64, "M", 128, 128, "M", 256, 256, "1x1:256", "M", 512, 512, "1x1:512", "M", 512, 512, "1x1:512", "M"),
    "D": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "E": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}


class VGG(nn.Module):
  """One column of Table 1; see the module docstring."""
  num_classes: int = 1000
  column: str = "D"
  batch_norm: bool = False
  dropout_rate: float = 0.5
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  conv_impl: str = "xla"

  def check(self):
    """Raises ConfigError for option values that cannot build the network (config.validate calls it)."""
    if self.column not in COLUMNS:
      raise ConfigError(f"config.model.column={self.column!r} is invalid: one of {sorted(COLUMNS)}")

  @nn.compact
  @logs_conv_impls
  def __call__(self, x, *, train: bool):
    self.check()
    x = x.astype(self.dtype)
    i = 0
    for layer in COLUMNS[self.column]:
      if layer == "M":
        x = MaxPool(2, 2)(x)
        continue
      if layer == "LRN":
        x = local_response_norm(x, 5, 1e-4, 0.75, 2.0)
        continue
      k, width = (1, int(layer.split(":")[1])) if isinstance(layer, str) else (3, layer)
      i += 1
      x = Conv(width, (k, k), padding=[(k // 2, k // 2)] * 2, dtype=self.dtype, param_dtype=self.param_dtype,
               impl=self.conv_impl, name=f"conv{i}")(x)
      if self.batch_norm:
        x = BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype,
                      param_dtype=self.param_dtype, impl=norm_impl(self.conv_impl), name=f"bn{i}")(x)
      x = nn.relu(x)
    x = adaptive_avg_pool(x, (7, 7))
    x = x.reshape(x.shape[0], -1)
    dense = lambda n, name: nn.Dense(n, dtype=self.dtype, param_dtype=self.param_dtype, name=name)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(nn.relu(dense(4096, "fc1")(x)))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(nn.relu(dense(4096, "fc2")(x)))
    return dense(self.num_classes, "fc3")(x).astype(jnp.float32)


for _col, _alias in (("A", "vgg11"), ("A-LRN", None), ("B", "vgg13"), ("C", None), ("D", "vgg16"), ("E", "vgg19")):
  register("vgg_" + _col.lower().replace("-", "_"), VGG, column=_col)
  if _alias:
    register(_alias, VGG, column=_col)
    register(_alias + "_bn", VGG, column=_col, batch_norm=True)
