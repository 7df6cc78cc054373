"""conv_impl='auto' and its CPU paths (cnnjax/layers/cpu_fast.py): every path against lax (forward and both
gradients, float32 and bfloat16, odd sizes, batch 1); 'xla' compiles exactly what flax's Conv does; 'auto' is
lax off CPU; XLA flags come from the entry points, not from importing cnnjax."""
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
from cnnjax.layers import cpu_fast
from cnnjax.layers._conv_spec import make_spec

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
         ("winograd_f4", (1, 6, 13, 3), 3, 1, ((2, 0), (1, 2))),   # SAME and more: tests/test_conv.py
         ("winograd_f2", (2, 7, 10, 3), 3, 1, ((0, 2), (1, 0)))]


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("path, shape, k, stride, padding", CASES)
def test_path_matches_lax_forward_and_both_gradients(path, shape, k, stride, padding, dtype):
  """Reference: lax at HIGHEST precision in float32 on the same (rounded) inputs and cotangent. float32 within
  1e-5 of the largest value (Winograd F(4x4) loses about a digit); bfloat16 within its rounding (2^-7)."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=shape), dtype)
  w = jnp.asarray(rng.normal(size=(k, k, shape[-1], 4)), dtype)
  spec = make_spec(x, w, (stride, stride), padding, dimension_numbers=DN)
  assert cpu_fast._fits(path, spec) or path.startswith("winograd")   # (few channels: would not be chosen)
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


def test_auto_is_lax_off_cpu_and_the_measured_paths_on_cpu():
  specs = {"3x3": _spec((8, 32, 32, 16), 3), "3x3 stride 2": _spec((8, 32, 32, 16), 3, 2),
           "3x3 stride 2, 4x4 out": _spec((8, 8, 8, 16), 3, 2), "1x1": _spec((8, 16, 16, 16), 1, padding="VALID"),
           "dilated": _spec((8, 16, 16, 16), 3, rhs_dilation=(2, 2)),
           "7x7 stride 2": _spec((8, 64, 64, 3), 7, 2)}
  for backend in ("gpu", "tpu"):
    for name, spec in specs.items():
      assert layers.resolve_impl("auto", spec, backend=backend) == ("xla", f"auto on {backend}: lax"), name
  cpu = {n: layers.resolve_impl("auto", s, backend="cpu")[0] for n, s in specs.items()}
  assert cpu["3x3 stride 2"] == "polyphase" and cpu["3x3 stride 2, 4x4 out"] == "lax_cpu"
  assert cpu["dilated"] == "lax_cpu" and cpu["7x7 stride 2"] == "polyphase"
  assert all(p in cpu_fast.PATHS for p in cpu.values())
  for impl in ("xla", "winograd", "direct"):   # any other impl resolves the same on every backend
    assert layers.resolve_impl(impl, specs["1x1"], backend="gpu") == layers.resolve_impl(impl, specs["1x1"])


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
def test_xla_is_exactly_flax_conv_and_auto_takes_the_cpu_paths(strides):
  """impl='xla' traces to the same program as flax.linen.Conv, forward and backward (no conditional, no custom
  VJP on CPU); impl='auto' on CPU materialises the input through a conditional and, strided, computes the input
  gradient without XLA's zero-dilated gradient (polyphase)."""
  x = jnp.ones((2, 17, 17, 3))
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


def test_auto_takes_the_tables_best_path_for_the_nearest_shape(monkeypatch):
  """The nearest entry (same kernel size and stride, closest in log output size and channels) decides; a path
  that does not fit the layer (Winograd for a dilated one or one under 128 channels) or no entry for its kernel
  leaves the defaults."""
  entries = ({"kernel": 3, "stride": 1, "hw": 32, "cin": 128, "cout": 128, "best": "winograd_f4"},
             {"kernel": 3, "stride": 1, "hw": 4, "cin": 512, "cout": 512, "best": "lax_cpu"},
             {"kernel": 1, "stride": 1, "hw": 14, "cin": 256, "cout": 1024, "best": "dot"})
  monkeypatch.setattr(cpu_fast, "table", lambda: entries)
  path = lambda *a, **kw: cpu_fast.choose(_spec(*a, **kw))[0]
  assert path((4, 28, 28, 160), 3, cout=128) == "winograd_f4"
  assert path((4, 28, 28, 48), 3, cout=80) == "lax_cpu"          # Winograd, but too few channels to repay compiling
  assert path((4, 5, 5, 384), 3, cout=384) == "lax_cpu"
  assert path((4, 16, 16, 64), 1, padding="VALID") == "dot"
  assert path((4, 16, 16, 64), 1, padding=((1, 1), (1, 1))) == "lax_cpu"     # padded 1x1: not a dot
  assert path((4, 32, 32, 64), 3, rhs_dilation=(2, 2)) == "lax_cpu"
  assert path((4, 32, 32, 64), 5) == "lax_cpu"                               # no 5x5 entry
  assert cpu_fast.choose(_spec((4, 28, 28, 160), 3, cout=128))[1] == "3x3 stride 1: table 32x32 128->128"
