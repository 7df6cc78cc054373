"""conv_impl='auto' and its CPU paths (cnnjax/layers/cpu_fast.py): every path against lax (forward and both
gradients, float32 and bfloat16, odd sizes, batch 1); 'xla' compiles exactly what flax's Conv does; 'auto' is
lax off CPU and runs the autotuner's decision on CPU (tests/test_autotune.py: how it decides); XLA flags come from
the entry points, not from importing cnnjax."""
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from cnnjax import layers
from cnnjax.layers import autotune, cpu_fast
from cnnjax.layers._conv_spec import make_spec
from tests.helpers import force_autotune_plan

DN = ("NHWC", "HWIO", "NHWC")
HI = lax.Precision.HIGHEST


def _spec(x_shape, k, strides=1, padding="SAME", cout=4, **kw):
  return make_spec(jax.ShapeDtypeStruct(x_shape, jnp.float32), jax.ShapeDtypeStruct((k, k, x_shape[-1], cout),
                   jnp.float32), (strides, strides), padding, dimension_numbers=DN, **kw)


def _rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30)


# (path, input shape, kernel size, stride, padding): odd and unequal sizes, batch 1, asymmetric padding.
CASES = [("lax_cpu", (1, 7, 9, 3), 3, 1, "SAME"),
         ("polyphase", (2, 17, 16, 3), 3, 2, "SAME"),
         ("polyphase", (1, 19, 17, 2), 3, 2, ((1, 1), (0, 2))),
         ("dot", (1, 7, 5, 6), 1, 1, "VALID"),
         ("dot", (2, 9, 7, 6), 1, 2, "VALID"),
         ("im2col", (1, 7, 9, 3), 3, 1, "SAME"),
         ("im2col", (2, 17, 16, 3), 3, 2, ((1, 1), (0, 2))),
         ("im2col", (1, 11, 10, 2), 5, 2, "VALID"),
         ("winograd_f4", (1, 6, 13, 3), 3, 1, ((2, 0), (1, 2))),   # SAME and more: tests/test_conv.py
         ("winograd_f2", (2, 7, 10, 3), 3, 1, ((0, 2), (1, 0)))]


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("path, shape, k, stride, padding", CASES)
def test_path_matches_lax_forward_and_both_gradients(path, shape, k, stride, padding, dtype):
  """Reference: lax at HIGHEST precision in float32 on the same (rounded) inputs and cotangent. float32 within
  1e-5 of the largest value (Winograd F(4x4) loses about a digit); bfloat16 within its rounding (2^-7)."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=shape), dtype)
  w = jnp.asarray(rng.normal(size=(k, k, shape[-1], 4)), dtype)
  spec = make_spec(x, w, (stride, stride), padding, dimension_numbers=DN)
  assert autotune.applies(path, spec)
  got, got_vjp = jax.vjp(jax.jit(lambda a, b: cpu_fast.conv(path, spec, a, b)), x, w)
  f32 = lambda a: a.astype(jnp.float32)
  ref, ref_vjp = jax.vjp(lambda a, b: lax.conv_general_dilated(a, b, (stride, stride), padding, dimension_numbers=DN,
                                                               precision=HI), f32(x), f32(w))
  ct = jnp.asarray(rng.normal(size=ref.shape), dtype)
  tol = 1e-5 if dtype == jnp.float32 else 2 ** -7
  assert got.dtype == dtype and got.shape == ref.shape
  assert _rel(got, ref) < tol
  for name, g, r in zip(("input", "kernel"), got_vjp(ct), ref_vjp(f32(ct))):
    assert g.dtype == dtype and g.shape == r.shape, name
    assert _rel(g, r) < tol, name


def test_auto_is_lax_off_cpu_and_undecided_and_the_cached_path_on_cpu(tmp_path, monkeypatch):
  specs = {"3x3": _spec((8, 32, 32, 16), 3), "3x3 stride 2": _spec((8, 32, 32, 16), 3, 2),
           "1x1": _spec((8, 16, 16, 16), 1, padding="VALID"), "dilated": _spec((8, 16, 16, 16), 3, rhs_dilation=(2, 2))}
  for backend in ("gpu", "tpu"):
    for name, spec in specs.items():
      assert layers.resolve_impl("auto", spec, backend=backend) == ("xla", f"auto on {backend}: lax"), name
  for name, spec in specs.items():   # the tests' autotune cache is empty: plain lax
    assert layers.resolve_impl("auto", spec, backend="cpu") == ("xla", "not decided (conv_autotune=cached): lax")
  force_autotune_plan(tmp_path, monkeypatch, {specs["3x3 stride 2"]: "polyphase", specs["1x1"]: "dot"})
  cpu = {n: layers.resolve_impl("auto", s, backend="cpu")[0] for n, s in specs.items()}
  assert cpu == {"3x3": "xla", "3x3 stride 2": "polyphase", "1x1": "dot", "dilated": "xla"}
  for impl in ("xla", "winograd", "direct"):   # any other impl resolves the same on every backend
    assert layers.resolve_impl(impl, specs["1x1"], backend="gpu") == layers.resolve_impl(impl, specs["1x1"])


def test_candidates_are_the_paths_that_fit_less_the_measured_losers():
  """Polyphase only for strided layers with outputs of at least 8x8, dot only for unpadded 1x1 layers, im2col for
  larger kernels whose patches fit IM2COL_MAX_BYTES, Winograd only for undilated 3x3 stride-1 layers of at least
  128 channels; grouped or dilated layers: lax only."""
  c = lambda *a, **kw: autotune.candidates(_spec(*a, **kw))
  assert c((4, 28, 28, 160), 3, cout=128) == ("xla", "lax_cpu", "im2col", "winograd_f4", "winograd_f2")
  assert c((4, 28, 28, 48), 3, cout=80) == ("xla", "lax_cpu", "im2col")  # Winograd: too few channels
  assert c((4, 16, 16, 64), 3, 2) == ("xla", "lax_cpu", "polyphase", "im2col")
  assert c((4, 14, 14, 64), 3, 2) == ("xla", "lax_cpu", "im2col")        # a 7x7 output
  assert c((4, 16, 16, 64), 1, padding="VALID") == ("xla", "lax_cpu", "dot")
  assert c((4, 16, 16, 64), 1, 2, padding="VALID") == ("xla", "lax_cpu", "polyphase", "dot")
  assert c((4, 16, 16, 64), 1, padding=((1, 1), (1, 1))) == ("xla", "lax_cpu")     # padded 1x1: not a dot
  assert c((4, 32, 32, 128), 3, cout=128, rhs_dilation=(2, 2)) == ("xla", "lax_cpu")
  assert c((4, 32, 32, 64), 5, 2) == ("xla", "lax_cpu", "polyphase", "im2col")
  assert "im2col" not in c((64, 112, 112, 64), 3)    # its patches would take more than IM2COL_MAX_BYTES


def _eqns(jaxpr):
  """Every equation of a jaxpr and of the jaxprs in its equations' parameters (conditionals, calls)."""
  out = []
  for eqn in jaxpr.eqns:
    out.append(eqn)
    for v in eqn.params.values():
      for j in (v if isinstance(v, (tuple, list)) else (v,)):
        if isinstance(j, jax.extend.core.ClosedJaxpr):
          out += _eqns(j.jaxpr)
        elif isinstance(j, jax.extend.core.Jaxpr):
          out += _eqns(j)
  return out


def _primitives(jaxpr):
  return {e.primitive.name for e in _eqns(jaxpr)}


@pytest.mark.parametrize("strides", [1, 2])
def test_xla_is_exactly_flax_conv_and_auto_takes_the_cpu_paths(strides, tmp_path, monkeypatch):
  """impl='xla' traces to the same program as flax.linen.Conv, forward and backward (no conditional, no custom
  VJP on CPU); impl='auto' on CPU, with 'lax_cpu' (stride 1) or 'polyphase' (stride 2) decided, materialises the
  input through a conditional and, strided, computes the input gradient without XLA's zero-dilated gradient."""
  x = jnp.ones((2, 17, 17, 3))
  spec = make_spec(x, jnp.ones((3, 3, 3, 4)), (strides, strides), "SAME", dimension_numbers=DN)
  force_autotune_plan(tmp_path, monkeypatch, {spec: "lax_cpu" if strides == 1 else "polyphase"})
  ref = nn.Conv(4, (3, 3), strides=strides)
  v = ref.init(jax.random.PRNGKey(0), x)
  prog = lambda m: jax.make_jaxpr(jax.grad(lambda v, x: jnp.sum(m.apply(v, x) ** 2), (0, 1)))(v, x)
  xla = prog(layers.Conv(4, (3, 3), strides=strides, impl="xla"))
  assert str(xla) == str(prog(ref))
  auto = _eqns(prog(layers.Conv(4, (3, 3), strides=strides, impl="auto")).jaxpr)
  assert "cond" in {e.primitive.name for e in auto}
  dilated = lambda eqns: [e for e in eqns if e.primitive.name == "conv_general_dilated"
                          and set(e.params["lhs_dilation"]) != {1}]
  if strides == 2:
    assert dilated(_eqns(xla.jaxpr)) and not dilated(auto)


def test_batch_norm_xla_sums_are_reductions_and_auto_sums_are_dots():
  x = jnp.ones((4, 5, 5, 3))
  prims = {}
  for impl in ("xla", "auto"):
    m = layers.BatchNorm(impl=impl)
    v = m.init(jax.random.PRNGKey(0), x)
    f = lambda v, x: jnp.sum(m.apply(v, x, mutable=["batch_stats"])[0] ** 2)
    prims[impl] = _primitives(jax.make_jaxpr(jax.grad(f, (0, 1)))(v, x).jaxpr)
  assert "dot_general" not in prims["xla"] and "dot_general" in prims["auto"]


def test_set_xla_flags_adds_the_flag_unless_the_user_set_it(monkeypatch):
  monkeypatch.delenv("CNNJAX_KEEP_XLA_FLAGS", raising=False)
  monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x")
  assert cpu_fast.set_xla_flags() == "--xla_dump_to=/tmp/x --xla_cpu_experimental_ynn_fusion_type="
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=dot")
  assert cpu_fast.set_xla_flags() == "--xla_cpu_experimental_ynn_fusion_type=dot"   # the user's value wins
  monkeypatch.setenv("XLA_FLAGS", "")
  monkeypatch.setenv("CNNJAX_KEEP_XLA_FLAGS", "1")
  assert cpu_fast.set_xla_flags() == ""


@pytest.mark.subprocess
@pytest.mark.slow
def test_importing_cnnjax_leaves_xla_flags_alone():
  code = ("import os; os.environ.pop('XLA_FLAGS', None); import cnnjax, cnnjax.layers, cnnjax.models, "
          "cnnjax.train.loop; print(repr(os.environ.get('XLA_FLAGS')))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       cwd=os.path.dirname(os.path.dirname(__file__)))
  assert out.stdout.strip() == "None"


def test_auto_plan_is_described_by_path_counts():
  from cnnjax.layers.impl_plan import Resolution, describe
  records = [Resolution("a", "auto", "lax_cpu", "3x3 stride 1"), Resolution("b", "auto", "polyphase", "3x3 stride 2"),
             Resolution("c", "auto", "lax_cpu", "3x3 stride 1"), Resolution("d", "auto", "dot", "1x1 stride 1")]
  assert describe(records) == f"conv_impl=auto on {jax.default_backend()}: lax_cpu 2, dot 1, polyphase 1"
