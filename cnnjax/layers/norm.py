"""Local response normalisation across channels (Krizhevsky et al. 2012, Sec. 3.3).

b_c = a_c / (k + alpha * sum_{c' in window(c)} a_{c'}^2) ** beta, window of `size` channels centred on c.
alpha is NOT divided by size, as in the paper (PyTorch's LocalResponseNorm divides it by size).
"""
from jax import lax
import jax.numpy as jnp


def local_response_norm(x, size=5, alpha=1e-4, beta=0.75, k=2.0):
  sq = jnp.square(x.astype(jnp.float32))
  half = size // 2
  pads = ((0, 0),) * (x.ndim - 1) + ((half, size - 1 - half),)
  s = lax.reduce_window(sq, 0.0, lax.add, (1,) * (x.ndim - 1) + (size,), (1,) * x.ndim, pads)
  return (x / jnp.power(k + alpha * s, beta).astype(x.dtype)).astype(x.dtype)
