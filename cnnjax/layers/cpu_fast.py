"""The CPU speed paths of `conv_impl='auto'`, in one place with their measurements (benchmarks/RESULTS.md).

On GPU and TPU 'auto' is plain lax (what `flax.linen.Conv` compiles) and batch norm reduces with plain sums.
On CPU each layer gets plain lax or one of these paths, whichever autotune.py measured fastest on this machine:

  'lax_cpu'      lax, with the input materialised first (`materialize`): XLA otherwise recomputes the input's
                 elementwise producers inside the kernel gradient's layout transpose (1.6 s of a 4.6 s
                 ResNet-18 CIFAR step; with it 0.36 s).
  'polyphase'    strided, undilated, ungrouped layers with outputs of at least 8x8: the input gradient by
                 polyphase decomposition (polyphase.py) instead of a convolution over zero-dilated gradients
                 (232-291 -> 84-103 ms for ResNet-18 CIFAR's 32x32 64->128 layer; slower below 8x8).
  'dot'          1x1 convolutions (any stride, no padding) as one dot_general over the channels.
  'im2col'       larger kernels as one matrix product over explicitly gathered patches (conv_im2col.py): all
                 three products of the step (forward, input and kernel gradients) become plain dots, at the
                 cost of writing the patches (kernel-size times the output) to memory. On a Zen 4, where XLA's
                 convolutions run near the matmul peak, it lost on most shapes (1.0-2.4x of lax) and won on some
                 strided ones (0.76x); it is a candidate so that each machine finds out.
  'winograd_f4', 'winograd_f2'   3x3 stride-1 layers by Winograd F(4x4, 3x3) / F(2x2, 3x3) with a
                 hand-written VJP (conv_winograd.py).

Which path a layer gets is measured on the machine at hand and cached per machine (autotune.py); plain lax
('xla') unless a path beats it clearly. Batch norm's sums are matrix products (`colsum`): 2.5-4x faster than XLA's
CPU reductions over an NHWC activation's leading axes (measured on the AMD EPYC, not re-decided per machine).

The XLA flag `--xla_cpu_experimental_ynn_fusion_type=` (YNNPACK off, XLA's Eigen path: a ResNet-18 CIFAR train
step 1.55x faster on a 2-core AMD EPYC, 1.48x on a 2-core Intel Xeon with AVX-512/AMX; docs/guide/cpu_speed.md)
is set by the entry points (experiments.main, experiments.sweep, benchmarks, tests) with
`set_xla_flags()` before JAX starts a backend, never on import.
"""
import logging
import os

import jax
import jax.numpy as jnp
from jax import lax

from cnnjax.layers import conv_im2col, conv_winograd
from cnnjax.layers._conv_spec import ConvSpec
from cnnjax.layers.polyphase import strided_conv

log = logging.getLogger("cnnjax")

XLA_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=",)
PATHS = ("lax_cpu", "polyphase", "dot", "im2col", "winograd_f4", "winograd_f2")
POLYPHASE_MIN_OUT = 8   # below an 8x8 output the phases' small convolutions lose to XLA's (measured)
# Winograd's tile transforms take XLA several seconds to compile per layer (ResNet-18 CIFAR's first step: 144 s
# with them, 45 s without, under load); below 128 channels the measured saving (3 ms a step for the default
# run's 8x8x64 layers) would not repay that within a run of a few hundred steps.
WINOGRAD_MIN_CHANNELS = 128
IM2COL_MAX_BYTES = 2 ** 30   # im2col's patches are kernel-size times the output: not tried above 1 GiB


def set_xla_flags() -> str:
  """Adds the project's CPU flags to XLA_FLAGS (a flag the user set already wins; `CNNJAX_KEEP_XLA_FLAGS=1`
  leaves XLA_FLAGS alone) and returns XLA_FLAGS. Must run before JAX starts a backend; afterwards it warns."""
  if os.environ.get("CNNJAX_KEEP_XLA_FLAGS") != "1":
    flags = os.environ.get("XLA_FLAGS", "")
    for flag in XLA_FLAGS:
      if flag.split("=")[0] not in flags:
        flags = (flags + " " + flag).strip()
    if flags != os.environ.get("XLA_FLAGS", ""):
      from jax._src import xla_bridge
      if xla_bridge.backends_are_initialized():
        log.warning("set_xla_flags: JAX's backends are already running; XLA_FLAGS=%r takes effect in new "
                    "processes only", flags)
      os.environ["XLA_FLAGS"] = flags
  return os.environ.get("XLA_FLAGS", "")


def materialize(x):
  """x itself, but written to memory: XLA cannot fuse across a conditional (see the module docstring). The
  predicate is true unless the first element is NaN, and both branches return x; `optimization_barrier` does
  not help because XLA's CPU pipeline removes it before fusion."""
  first = x.reshape(-1)[0]
  return lax.cond(first == first, lambda v: v, lambda v: v * 1, x)


def colsum(a, auto: bool):
  """Sum over the rows of a (M, C) float32 matrix: a matrix product under 'auto' on CPU, else jnp.sum."""
  if not auto or jax.default_backend() != "cpu":
    return jnp.sum(a, axis=0)
  return jnp.dot(jnp.ones((a.shape[0],), a.dtype), a, precision=lax.Precision.HIGHEST)


def plain(spec: ConvSpec) -> bool:
  """At most 3 spatial dims, undilated, ungrouped, default precision: what polyphase, dot and Winograd take."""
  return (spec.nd <= 3 and spec.feature_group_count == 1 and spec.batch_group_count == 1
          and set(spec.lhs_dilation + spec.rhs_dilation) == {1} and spec.precision is None)


def conv(path: str, spec: ConvSpec, x, w):
  """The layer on the CPU path `path`, for canonical x (N, *spatial, C) and w (*kernel, I, O) in the input
  dtype; returns the canonical output in spec.out_dtype."""
  nd = spec.nd
  if path in ("lax_cpu", "xla"):   # 'xla': plain lax on the canonical layout (the autotuner's reference)
    act = (0, nd + 1) + tuple(range(1, nd + 1))
    dn = lax.ConvDimensionNumbers(act, (nd + 1, nd) + tuple(range(nd)), act)
    x = materialize(x) if path == "lax_cpu" else x
    return lax.conv_general_dilated(x, w, spec.strides, spec.padding, spec.lhs_dilation, spec.rhs_dilation, dn,
                                    spec.feature_group_count, spec.batch_group_count, spec.precision,
                                    spec.out_dtype)
  if path == "polyphase":
    return strided_conv(materialize(x), w, spec.strides, spec.padding).astype(spec.out_dtype)
  if path == "dot":
    x = x[(slice(None),) + tuple(slice(None, None, s) for s in spec.strides)]
    return lax.dot_general(x.astype(spec.compute_dtype), w.reshape(w.shape[-2:]).astype(spec.compute_dtype),
                           (((x.ndim - 1,), (0,)), ((), ()))).astype(spec.out_dtype)
  if path == "im2col":   # materialised: each input element is read kernel-size times by the gather
    y = conv_im2col.conv_im2col(spec, materialize(x).astype(spec.compute_dtype), w.astype(spec.compute_dtype))
    return y.astype(spec.out_dtype)
  if path in ("winograd_f4", "winograd_f2"):
    # Materialised: the input transform reads each element up to alpha^2 times, and XLA would recompute the
    # input's elementwise producers (batch norm, ReLU) inside it.
    y = conv_winograd.conv_winograd(spec, materialize(x).astype(spec.compute_dtype),
                                    w.astype(spec.compute_dtype), int(path[-1]))
    return y.astype(spec.out_dtype)
  raise ValueError(f"path={path!r} is not one of {PATHS}")
