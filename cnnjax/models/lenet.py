"""LeNet-1 (LeCun et al. 1989/1990) and LeNet-5 (LeCun et al. 1998, "Gradient-based learning applied to
document recognition", Sec. II.B and Table I), with their partial connections and trainable subsampling.

LeNet-5 per layer (trainable parameters, as the paper counts them): C1 156, S2 12, C3 1,516, S4 32, C5 48,120,
F6 10,164: 60,000 in all. The output layer is 10 Euclidean RBF units, y_i = sum_j (x_j - w_ij)^2, whose 840
parameters are fixed (+-1 codes; the paper draws them as 7x12 stylised bitmaps of the digits, which it does not
print, so we use a fixed pseudo-random +-1 code); the model returns -y_i as logits. Activations are the paper's
scaled tanh f(a) = 1.7159 tanh(2a/3) (Appendix A). `modern=True` gives today's variant: ReLU, max pooling,
a full C3 (2,416 parameters) and a linear output layer.

LeNet-1 (28x28 -> H1 4@24x24 -> H2 4@12x12 -> H3 12@8x8 -> H4 12@4x4 -> 10, as in LeCun et al. 1995's
comparison): the papers describe H3 as partially connected to H2 without printing the table; we connect each
of the 6 pairs of H2 maps to two H3 maps (612 parameters), giving 2,678 trainable parameters in all
(H1 104, H2 8, H3 612, H4 24, output 1,930), close to the "about 2,600" usually quoted.
"""
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from cnnjax.layers import Conv, MaxPool, logs_conv_impls
from cnnjax.models.registry import register

# Table I of LeCun et al. 1998: which S2 maps (rows 0..5) feed each C3 map (columns 0..15).
C3_TABLE = ((0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (4, 5, 0), (5, 0, 1),
            (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (3, 4, 5, 0), (4, 5, 0, 1), (5, 0, 1, 2),
            (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5), (0, 1, 2, 3, 4, 5))
# LeNet-1's H2 -> H3: each pair of the 4 H2 maps feeds two H3 maps.
H3_TABLE = tuple(p for p in ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)) for _ in range(2))


def scaled_tanh(x):
  """LeCun et al. 1998, Appendix A: f(a) = A tanh(S a), A = 1.7159, S = 2/3."""
  return 1.7159 * jnp.tanh(x * (2.0 / 3.0))


class Subsample(nn.Module):
  """Trainable subsampling (S2, S4): the sum of each 2x2 block times a per-map coefficient, plus a per-map
  bias (2 parameters a map)."""
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    coef = self.param("coefficient", nn.initializers.constant(0.25), (c,), self.param_dtype)
    bias = self.param("bias", nn.initializers.zeros, (c,), self.param_dtype)
    n, h, w, _ = x.shape
    s = x[:, :h // 2 * 2, :w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c).sum(axis=(2, 4))
    return s * coef.astype(x.dtype) + bias.astype(x.dtype)


class PartialConv(nn.Module):
  """A valid convolution whose output map i sees only the input maps `table[i]` (one kernel per output map)."""
  table: Sequence[Sequence[int]]
  kernel_size: int = 5
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  conv_impl: str = "xla"

  @nn.compact
  def __call__(self, x):
    outs = [Conv(1, (self.kernel_size,) * 2, padding="VALID", dtype=self.dtype, param_dtype=self.param_dtype,
                 impl=self.conv_impl, name=f"map{i}")(x[..., list(idx)]) for i, idx in enumerate(self.table)]
    return jnp.concatenate(outs, axis=-1)


class LeNet5(nn.Module):
  """LeNet-5 on 32x32 inputs (LeCun et al. 1998, Fig. 2); see the module docstring."""
  num_classes: int = 10
  modern: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  conv_impl: str = "xla"

  @nn.compact
  @logs_conv_impls
  def __call__(self, x, *, train: bool):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    act = nn.relu if self.modern else scaled_tanh
    pool = ((lambda y, name: MaxPool(2, name=name)(y)) if self.modern else
            (lambda y, name: Subsample(self.param_dtype, name=name)(y)))
    x = x.astype(self.dtype)
    x = act(Conv(6, (5, 5), padding="VALID", impl=self.conv_impl, name="C1", **kw)(x))
    x = act(pool(x, "S2"))
    if self.modern:
      x = Conv(16, (5, 5), padding="VALID", impl=self.conv_impl, name="C3", **kw)(x)
    else:
      x = PartialConv(C3_TABLE, conv_impl=self.conv_impl, name="C3", **kw)(x)
    x = act(x)
    x = act(pool(x, "S4"))
    x = act(Conv(120, (5, 5), padding="VALID", impl=self.conv_impl, name="C5", **kw)(x))
    x = x.reshape(x.shape[0], -1)
    x = act(nn.Dense(84, name="F6", **kw)(x))
    if self.modern:
      return nn.Dense(self.num_classes, name="output", **kw)(x).astype(jnp.float32)
    # Euclidean RBF output units with fixed +-1 centres (not parameters): logits are minus the distances.
    centres = jnp.asarray(np.where(np.random.default_rng(1998).random((self.num_classes, 84)) < 0.5, -1.0, 1.0),
                          jnp.float32)
    d = jnp.sum(jnp.square(x.astype(jnp.float32)[:, None, :] - centres[None]), axis=-1)
    return -d


class LeNet1(nn.Module):
  """LeNet-1 on 28x28 inputs; see the module docstring."""
  num_classes: int = 10
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  conv_impl: str = "xla"

  @nn.compact
  @logs_conv_impls
  def __call__(self, x, *, train: bool):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = x.astype(self.dtype)
    x = scaled_tanh(Conv(4, (5, 5), padding="VALID", impl=self.conv_impl, name="H1", **kw)(x))
    x = scaled_tanh(Subsample(self.param_dtype, name="H2")(x))
    x = scaled_tanh(PartialConv(H3_TABLE, conv_impl=self.conv_impl, name="H3", **kw)(x))
    x = scaled_tanh(Subsample(self.param_dtype, name="H4")(x))
    x = x.reshape(x.shape[0], -1)
    return nn.Dense(self.num_classes, name="output", **kw)(x).astype(jnp.float32)


register("lenet1", LeNet1)
register("lenet5", LeNet5)
