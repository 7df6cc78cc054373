"""The polyphase input gradient of strided convolutions (the Conv module's CPU path) against lax's gradient."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from cnnjax.layers._conv_spec import make_spec
from cnnjax.layers.polyphase import polyphase_input_grad, strided_conv

CASES = [  # input (N, spatial..., C), kernel (spatial..., I, O), strides, padding
    ((2, 9, 5), (3, 5, 4), (2,), "SAME"),
    ((2, 12, 12, 3), (3, 3, 3, 4), (2, 2), [(1, 1), (1, 1)]),  # ResNet's stride-2 3x3
    ((2, 13, 12, 3), (3, 3, 3, 4), (2, 2), "SAME"),  # asymmetric SAME padding, odd size
    ((1, 11, 7, 2), (1, 1, 2, 3), (2, 2), "VALID"),  # ResNet's 1x1 projection shortcut
    ((1, 15, 13, 2), (7, 7, 2, 3), (2, 3), [(3, 2), (0, 4)]),  # stem-like, unequal strides
    ((1, 10, 10, 2), (2, 2, 2, 3), (3, 3), "VALID"),  # stride larger than the kernel: empty phases
    ((1, 7, 7, 2), (3, 3, 2, 2), (4, 4), [(1, 1), (1, 1)]),
    ((1, 5, 6, 7, 2), (3, 2, 3, 2, 3), (2, 2, 3), "SAME"),  # 3-D
]


def _dn(x):
  sp = "DHW"[3 - (x.ndim - 2):]
  return (f"N{sp}C", f"{sp}IO", f"N{sp}C")


def _lax_conv(x, w, strides, padding):
  return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=_dn(x), precision=lax.Precision.HIGHEST)


def _explicit(x, w, strides, padding):
  return make_spec(x, w, strides, padding, dimension_numbers=_dn(x)).padding


@pytest.mark.parametrize("xs,ws,strides,padding", CASES)
def test_input_gradient_matches_lax_in_float64(xs, ws, strides, padding):
  rng = np.random.default_rng(0)
  with jax.enable_x64(True):
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    pads = _explicit(x, w, strides, padding)
    y, vjp = jax.vjp(lambda x: _lax_conv(x, w, strides, padding), x)
    dy = rng.standard_normal(y.shape)
    np.testing.assert_allclose(polyphase_input_grad(dy, w, x.shape, strides, pads), vjp(dy)[0], rtol=1e-12,
                               atol=1e-12)


@pytest.mark.parametrize("xs,ws,strides,padding", CASES[:4])
def test_strided_conv_value_and_gradients_match_lax_under_jit(xs, ws, strides, padding):
  rng = np.random.default_rng(1)
  x, w = jnp.asarray(rng.standard_normal(xs), jnp.float32), jnp.asarray(rng.standard_normal(ws), jnp.float32)
  pads = _explicit(x, w, strides, padding)
  loss = lambda conv: jax.jit(jax.value_and_grad(lambda x, w: jnp.sum(jnp.sin(conv(x, w))), (0, 1)))
  mine = loss(lambda x, w: strided_conv(x, w, strides, pads))(x, w)
  ref = loss(lambda x, w: _lax_conv(x, w, strides, padding))(x, w)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4), mine, ref)


def test_hand_computed_1d_example():
  """x of length 5, kernel [1, 2, 3], stride 2, no padding: y0 = x0 + 2 x1 + 3 x2, y1 = x2 + 2 x3 + 3 x4, so
  dL/dx for dy = (1, 10) is (1, 2, 3 + 10, 20, 30)."""
  w = jnp.array([1.0, 2.0, 3.0]).reshape(3, 1, 1)
  dx = polyphase_input_grad(jnp.array([1.0, 10.0]).reshape(1, 2, 1), w, (1, 5, 1), (2,), ((0, 0),))
  np.testing.assert_array_equal(dx.ravel(), [1.0, 2.0, 13.0, 20.0, 30.0])
