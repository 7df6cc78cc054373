"""The CPU speed paths of `conv_impl='auto'`, in one place with their measurements (benchmarks/RESULTS.md).

On GPU and TPU 'auto' is plain lax (what `flax.linen.Conv` compiles) and batch norm reduces with plain sums.
On CPU (jax 0.10's XLA, 2-core x86 machines) each layer gets the path measured fastest for its shape:

  'lax_cpu'      lax, with the input materialised first (`materialize`): XLA otherwise recomputes the input's
                 elementwise producers inside the kernel gradient's layout transpose (1.6 s of a 4.6 s
                 ResNet-18 CIFAR step; with it 0.36 s).
  'polyphase'    strided, undilated, ungrouped layers with outputs of at least 8x8: the input gradient by
                 polyphase decomposition (polyphase.py) instead of a convolution over zero-dilated gradients
                 (232-291 -> 84-103 ms for ResNet-18 CIFAR's 32x32 64->128 layer; slower below 8x8).
  'dot'          1x1 convolutions (any stride, no padding) as one dot_general over the channels.
  'winograd_f4', 'winograd_f2'   3x3 stride-1 layers by Winograd F(4x4, 3x3) / F(2x2, 3x3) with a
                 hand-written VJP (conv_winograd.py).

'dot' and Winograd are used for the shape classes where the table `cpu_table.json` (measured by
`python -m benchmarks.conv --table --write_table`) found them faster than 'lax_cpu' (Winograd only from 128
channels on, `WINOGRAD_MIN_CHANNELS`: its compile time); without an entry for a layer's
kernel and stride the layer gets 'lax_cpu' / 'polyphase'. Batch norm's sums are matrix products (`colsum`):
2.5-4x faster than XLA's CPU reductions over an NHWC activation's leading axes.

The XLA flag `--xla_cpu_experimental_ynn_fusion_type=` (YNNPACK off, XLA's Eigen path; 1.55x on a ResNet-18
CIFAR train step) is set by the entry points (experiments.main, experiments.sweep, benchmarks, tests) with
`set_xla_flags()` before JAX starts a backend, never on import.
"""
import functools
import json
import logging
import math
import os
import pathlib
from typing import Optional, Tuple

import jax
import jax.numpy as jnp
from jax import lax

from cnnjax.layers import conv_winograd
from cnnjax.layers._conv_spec import ConvSpec
from cnnjax.layers.polyphase import strided_conv

log = logging.getLogger("cnnjax")

XLA_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=",)
PATHS = ("lax_cpu", "polyphase", "dot", "winograd_f4", "winograd_f2")
POLYPHASE_MIN_OUT = 8   # below an 8x8 output the phases' small convolutions lose to XLA's (measured)
# Winograd's tile transforms take XLA several seconds to compile per layer (ResNet-18 CIFAR's first step: 144 s
# with them, 45 s without, under load); below 128 channels the measured saving (3 ms a step for the default
# run's 8x8x64 layers) would not repay that within a run of a few hundred steps.
WINOGRAD_MIN_CHANNELS = 128
TABLE_PATH = pathlib.Path(__file__).with_name("cpu_table.json")


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


@functools.lru_cache(maxsize=None)
def table() -> tuple:
  """The measured entries of cpu_table.json: ({'kernel', 'stride', 'hw', 'cin', 'cout', 'best', ...}, ...)."""
  if not TABLE_PATH.exists():
    return ()
  return tuple(json.loads(TABLE_PATH.read_text())["entries"])


def _plain(spec: ConvSpec) -> bool:
  """At most 3 spatial dims, undilated, ungrouped, default precision."""
  return (spec.nd <= 3 and spec.feature_group_count == 1 and spec.batch_group_count == 1
          and set(spec.lhs_dilation + spec.rhs_dilation) == {1} and spec.precision is None)


def nearest(spec: ConvSpec) -> Optional[dict]:
  """The table entry with the layer's kernel size and stride closest in log(output size, in, out channels)."""
  k, s = spec.kernel_spatial, spec.strides
  if len(set(k)) != 1 or len(set(s)) != 1:
    return None
  hw = math.prod(spec.out_spatial) ** (1 / spec.nd)
  cands = [e for e in table() if e["kernel"] == k[0] and e["stride"] == s[0]]
  dist = lambda e: sum(math.log(a / b) ** 2 for a, b in ((e["hw"], hw), (e["cin"], spec.in_shape[-1]),
                                                         (e["cout"], spec.out_shape[-1])))
  return min(cands, key=dist) if cands else None


def resolve_auto(spec: ConvSpec, backend: Optional[str] = None) -> Tuple[str, str]:
  """(implementation or CPU path, why) that 'auto' runs for `spec` on `backend` (default: JAX's)."""
  backend = backend or jax.default_backend()
  if backend != "cpu":
    return "xla", f"auto on {backend}: lax"
  return choose(spec)


def choose(spec: ConvSpec) -> Tuple[str, str]:
  """(path, why) for one layer under 'auto' on CPU."""
  if not _plain(spec):
    return "lax_cpu", "grouped, dilated, >3-D or explicit precision"
  entry = nearest(spec)
  shape = f"{'x'.join(map(str, spec.kernel_spatial))} stride {max(spec.strides)}"
  if entry is not None and _fits(entry["best"], spec):
    return entry["best"], f"{shape}: table {entry['hw']}x{entry['hw']} {entry['cin']}->{entry['cout']}"
  if max(spec.strides) > 1 and min(spec.out_spatial) >= POLYPHASE_MIN_OUT:
    return "polyphase", f"{shape}, output >= {POLYPHASE_MIN_OUT}"
  return "lax_cpu", shape


def _fits(path: str, spec: ConvSpec) -> bool:
  if path == "dot":
    return set(spec.kernel_spatial) == {1} and all(p == (0, 0) for p in spec.padding)
  if path.startswith("winograd"):
    channels = min(spec.in_shape[-1], spec.out_shape[-1])
    return not conv_winograd.winograd_limits(spec) and channels >= WINOGRAD_MIN_CHANNELS
  if path == "polyphase":
    return max(spec.strides) > 1
  return path in PATHS


def conv(path: str, spec: ConvSpec, x, w):
  """The layer on the CPU path `path`, for canonical x (N, *spatial, C) and w (*kernel, I, O) in the input
  dtype; returns the canonical output in spec.out_dtype."""
  nd = spec.nd
  if path == "lax_cpu":
    act = (0, nd + 1) + tuple(range(1, nd + 1))
    dn = lax.ConvDimensionNumbers(act, (nd + 1, nd) + tuple(range(nd)), act)
    return lax.conv_general_dilated(materialize(x), w, spec.strides, spec.padding, spec.lhs_dilation,
                                    spec.rhs_dilation, dn,
                                    spec.feature_group_count, spec.batch_group_count, spec.precision,
                                    spec.out_dtype)
  if path == "polyphase":
    return strided_conv(materialize(x), w, spec.strides, spec.padding).astype(spec.out_dtype)
  if path == "dot":
    x = x[(slice(None),) + tuple(slice(None, None, s) for s in spec.strides)]
    return lax.dot_general(x.astype(spec.compute_dtype), w.reshape(w.shape[-2:]).astype(spec.compute_dtype),
                           (((x.ndim - 1,), (0,)), ((), ()))).astype(spec.out_dtype)
  if path in ("winograd_f4", "winograd_f2"):
    # Materialised: the input transform reads each element up to alpha^2 times, and XLA would recompute the
    # input's elementwise producers (batch norm, ReLU) inside it.
    y = conv_winograd.conv_winograd(spec, materialize(x).astype(spec.compute_dtype),
                                    w.astype(spec.compute_dtype), int(path[-1]))
    return y.astype(spec.out_dtype)
  raise ValueError(f"path={path!r} is not one of {PATHS}")
