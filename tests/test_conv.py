"""Hand-written convolutions against jax.lax.conv_general_dilated (forward and VJP), hand-worked examples,
the textbook convolution against numpy/scipy, and the argument errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal
from hypothesis import given, settings, strategies as st
from jax import lax

from cnnjax.layers import IMPLS, conv_general_dilated
from cnnjax.layers.conv import convolve
from tests import helpers

HI = lax.Precision.HIGHEST
LAYOUTS = {1: [("NWC", "WIO", "NWC"), ("NCW", "OIW", "NCW")],
           2: [("NHWC", "HWIO", "NHWC"), ("NCHW", "OIHW", "NCHW"), ("NHWC", "OIHW", "NCHW")],
           3: [("NDHWC", "DHWIO", "NDHWC"), ("NCDHW", "OIDHW", "NCDHW")]}


def _rel(a, b):
  """max |a - b| relative to max |b|, floored at 1: inputs are O(1), so an all-zero reference (e.g. a gradient
  that padding cuts off) is compared with an absolute tolerance instead of dividing rounding noise by zero."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1.0)


@st.composite
def problems(draw, impl):
  nd = draw(st.integers(1, 3)) if impl != "winograd" else draw(st.sampled_from([1, 2, 2]))
  groups = draw(st.sampled_from([1, 1, 2, 3]))
  cin, cout = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
  k = tuple(draw(st.integers(1, 3)) for _ in range(nd)) if impl != "winograd" else (3,) * nd
  strides = tuple(draw(st.integers(1, 2)) for _ in range(nd)) if impl != "winograd" else (1,) * nd
  rdil = tuple(draw(st.integers(1, 2)) for _ in range(nd)) if impl != "winograd" else (1,) * nd
  ldil = tuple(draw(st.integers(1, 2)) for _ in range(nd)) if impl not in ("winograd",) and draw(st.booleans()) \
      else (1,) * nd
  size = tuple(draw(st.integers(max(1, (kk - 1) * r + 1), 7 if nd < 3 else 5)) for kk, r in zip(k, rdil))
  pad_kind = draw(st.sampled_from(["SAME", "VALID", "explicit"]))
  if pad_kind == "explicit" or ldil != (1,) * nd:
    padding = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(nd))
  else:
    padding = pad_kind
  layout = draw(st.sampled_from(LAYOUTS[nd]))
  n = draw(st.integers(1, 2))
  return dict(nd=nd, groups=groups, cin=cin, cout=cout, k=k, strides=strides, rdil=rdil, ldil=ldil, size=size,
              padding=padding, layout=layout, n=n, seed=draw(st.integers(0, 2 ** 16)))


def _arrays(p, dtype=jnp.float32):
  rng = np.random.default_rng(p["seed"])
  lhs_spec, rhs_spec, _ = p["layout"]
  lhs_shape = {"N": p["n"], "C": p["cin"]}
  rhs_shape = {"O": p["cout"], "I": p["cin"] // p["groups"]}
  sp = [c for c in lhs_spec if c not in "NC"]
  for c, s, kk in zip(sp, p["size"], p["k"]):
    lhs_shape[c], rhs_shape[c] = s, kk
  x = rng.normal(size=[lhs_shape[c] for c in lhs_spec])
  w = rng.normal(size=[rhs_shape[c] for c in rhs_spec])
  return jnp.asarray(x, dtype), jnp.asarray(w, dtype)


def _check(impl, p, tol):
  x, w = _arrays(p)
  kw = dict(window_strides=p["strides"], padding=p["padding"], lhs_dilation=p["ldil"], rhs_dilation=p["rdil"],
            dimension_numbers=p["layout"], feature_group_count=p["groups"], precision=HI)
  mine = lambda a, b: conv_general_dilated(a, b, **kw, impl=impl)
  try:
    ref, ref_vjp = jax.vjp(lambda a, b: lax.conv_general_dilated(a, b, **kw), x, w)
  except (ValueError, TypeError) as e:   # a problem lax rejects is rejected here too
    with pytest.raises((ValueError, TypeError)):
      mine(x, w)
    return f"lax refused: {e}"
  if ref.size == 0:                      # lax returns an empty array for a window larger than the input
    with pytest.raises(ValueError, match="window is larger than the padded input"):
      mine(x, w)
    return "empty"
  got, got_vjp = jax.vjp(lambda a, b: conv_general_dilated(a, b, **kw, impl=impl), x, w)
  assert got.shape == ref.shape and got.dtype == ref.dtype
  assert _rel(got, ref) < tol, p
  ct = jnp.asarray(np.random.default_rng(1).normal(size=ref.shape), jnp.float32)
  for g, r in zip(got_vjp(ct), ref_vjp(ct)):
    assert _rel(g, r) < tol, p
  return "compared"


@pytest.mark.slow
@pytest.mark.parametrize("impl", [i for i in IMPLS if i != "xla"])
def test_forward_and_vjp_match_lax(impl):
  tol = 1e-4 if impl == "fft" else 1e-5

  outcomes = []

  # Winograd: fewer examples, each compiles its forward and hand-written VJP transforms (seconds each); the
  # explicit odd-size, batch-1 and bf16 cases are in tests/test_cpu_fast.py.
  @settings(max_examples=helpers.examples(10 if impl == "winograd" else 20), deadline=None)
  @given(problems(impl))
  def run(p):
    outcomes.append(_check(impl, p, tol))
  run()
  assert outcomes.count("compared") >= len(outcomes) // 2, outcomes   # mostly real comparisons


@pytest.mark.parametrize("impl", ["direct", "im2col", "fft", "winograd", "auto"])
def test_bfloat16_within_one_rounding(impl):
  """bf16 in, bf16 out: computed in float32 and rounded once, so within bf16's half-ulp (2^-8 relative) of the
  float32 result, like lax's own bf16 convolution."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 8, 8, 4)), jnp.bfloat16)
  w = jnp.asarray(rng.normal(size=(3, 3, 4, 5)), jnp.bfloat16)
  dn = ("NHWC", "HWIO", "NHWC")
  ref32 = lax.conv_general_dilated(x.astype(jnp.float32), w.astype(jnp.float32), (1, 1), "SAME",
                                   dimension_numbers=dn, precision=HI)
  got = conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn, impl=impl)
  assert got.dtype == jnp.bfloat16
  assert _rel(got, ref32) < 2 ** -7
  assert _rel(got, lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn)) < 2 ** -7


@pytest.mark.parametrize("impl", IMPLS)
def test_hand_worked_examples(impl):
  # 1-D cross-correlation, VALID: x = [1, 2, 3, 4], w = [1, 0, -1] -> [1 - 3, 2 - 4] = [-2, -2].
  x = jnp.array([1.0, 2, 3, 4]).reshape(1, 4, 1)
  w = jnp.array([1.0, 0, -1]).reshape(3, 1, 1)
  y = conv_general_dilated(x, w, (1,), "VALID", dimension_numbers=("NWC", "WIO", "NWC"), impl=impl)
  np.testing.assert_allclose(y.ravel(), [-2, -2], atol=1e-5)
  # 2-D, 3x3 input 1..9, 2x2 kernel of ones, stride 1, VALID -> window sums [[12, 16], [24, 28]].
  x2, w2 = jnp.arange(1.0, 10).reshape(1, 3, 3, 1), jnp.ones((2, 2, 1, 1))
  two_by_two = lambda: conv_general_dilated(x2, w2, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                            impl=impl)
  # Transposed (input dilation 2), kernel [1, 1]: x = [1, 2] -> dilated [1, 0, 2] -> VALID -> [1, 2].
  transposed = lambda: conv_general_dilated(jnp.array([1.0, 2]).reshape(1, 2, 1), jnp.ones((2, 1, 1)), (1,),
                                            ((0, 0),), lhs_dilation=(2,), dimension_numbers=("NWC", "WIO", "NWC"),
                                            impl=impl)
  if impl == "winograd":  # only 3x3 (size 3 per dim), stride 1, undilated: the function refuses, naming why
    with pytest.raises(ValueError, match=r"kernel spatial size \(2, 2\)"):
      two_by_two()
    with pytest.raises(ValueError, match=r"kernel spatial size \(2,\), lhs_dilation=\(2,\)"):
      transposed()
  else:
    np.testing.assert_allclose(two_by_two()[0, ..., 0], [[12, 16], [24, 28]], atol=1e-4)
    np.testing.assert_allclose(transposed().ravel(), [1, 2], atol=1e-5)


@pytest.mark.parametrize("tile", [2, 4])
def test_winograd_tiles(tile):
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(2, 11, 9, 6)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(3, 3, 6, 7)), jnp.float32)
  dn = ("NHWC", "HWIO", "NHWC")
  ref = lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn, precision=HI)
  got = conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn, precision=HI, impl="winograd",
                             winograd_tile=tile)
  assert _rel(got, ref) < 1e-5


@pytest.mark.parametrize("mode", ["full", "same", "valid"])
def test_convolve_equals_numpy_and_scipy(mode):
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=9), rng.normal(size=4)
  np.testing.assert_allclose(convolve(a, b, mode), np.convolve(a, b, mode), rtol=1e-5, atol=1e-5)
  a2, b2 = rng.normal(size=(6, 7)), rng.normal(size=(3, 2))
  np.testing.assert_allclose(convolve(a2, b2, mode), scipy.signal.convolve(a2, b2, mode), rtol=1e-5, atol=1e-5)
  a3, b3 = rng.normal(size=(4, 5, 3)), rng.normal(size=(2, 3, 2))
  np.testing.assert_allclose(convolve(a3, b3, mode), scipy.signal.convolve(a3, b3, mode), rtol=1e-5, atol=1e-5)


def test_convolution_is_correlation_with_flipped_kernel():
  """s(n) = sum_m a(m) b(n - m): hand-worked [1, 2, 3] * [0, 1, 0.5] = [0, 1, 2.5, 4, 1.5]; deep-learning
  'convolution' (cross-correlation) of a with flip(b) gives the same."""
  a, b = jnp.array([1.0, 2, 3]), jnp.array([0.0, 1, 0.5])
  np.testing.assert_allclose(convolve(a, b, "full"), [0, 1, 2.5, 4, 1.5], atol=1e-6)
  corr = conv_general_dilated(a.reshape(1, 1, 3), jnp.flip(b).reshape(1, 1, 3), (1,), ((2, 2),), impl="direct")
  np.testing.assert_allclose(corr.ravel(), [0, 1, 2.5, 4, 1.5], atol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    (dict(feature_group_count=4), "feature_group_count"),
    (dict(padding="VALID", x_shape=(1, 2, 2, 6)), "larger than"),
    (dict(impl="winograd", window_strides=(2, 2)), "stride"),
    (dict(dimension_numbers=("NHWC", "HWIX", "NHWC")), "HWIX"),
    (dict(impl="magic"), "magic"),
])
def test_invalid_arguments_name_the_value(kwargs, message):
  x = jnp.ones(kwargs.pop("x_shape", (1, 6, 6, 6)))
  w = jnp.ones((3, 3, 6, 4)) if "feature_group_count" not in kwargs else jnp.ones((3, 3, 2, 4))
  args = dict(window_strides=(1, 1), padding="SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"), impl="direct")
  args.update(kwargs)
  with pytest.raises((ValueError, TypeError), match=message):
    conv_general_dilated(x, w, **args)
