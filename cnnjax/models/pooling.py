"""Adaptive average pooling (PyTorch's AdaptiveAvgPool2d): the torchvision heads of AlexNet and VGG pool to a
fixed grid, so their classifier has the same size at any input resolution."""
import math

import jax.numpy as jnp


def adaptive_avg_pool(x, out_hw):
  """NHWC -> N x out_h x out_w x C; cell (i, j) averages rows floor(i*H/oh) .. ceil((i+1)*H/oh) - 1 (and
  likewise for columns), exactly as torch.nn.AdaptiveAvgPool2d."""
  h, w = x.shape[1:3]
  oh, ow = out_hw
  if (h, w) == (oh, ow):
    return x
  rows = [(math.floor(i * h / oh), math.ceil((i + 1) * h / oh)) for i in range(oh)]
  cols = [(math.floor(j * w / ow), math.ceil((j + 1) * w / ow)) for j in range(ow)]
  out = [[jnp.mean(x[:, r0:r1, c0:c1, :], axis=(1, 2)) for c0, c1 in cols] for r0, r1 in rows]
  return jnp.stack([jnp.stack(r, axis=1) for r in out], axis=1)
