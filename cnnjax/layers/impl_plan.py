"""Which convolution implementation each layer runs, and one log line per model saying so.

`resolve_impl` is the one place a per-layer choice is made; `Conv` calls it with its checked `ConvSpec`. An
implementation with geometric limits ('winograd': 3x3, stride 1, undilated) takes the convolutions it can do and
lax ('xla') the others. 'auto' is lax on GPU and TPU and, on CPU, what autotune.py measured (or cached) for the
layer's convolution on this machine; 'xla' is plain lax on every backend. Models decorate their `__call__` with
`logs_conv_impls`, which records every Conv's resolution during a trace and logs the summary once per distinct
model and plan, e.g.

  ResNet: conv_impl=winograd: 7 of 9 convolutions; xla for 2 (3x3 stride 2: 2)
  ResNet: conv_impl=auto on cpu: xla 5, polyphase 2, dot 2

`recording()` gives the same records to any caller (tests, a training setup that writes them to the workdir).
"""
import collections
import contextlib
import functools
import logging
import os
from typing import List, NamedTuple, Optional, Tuple

import jax

from cnnjax.layers import autotune
from cnnjax.layers._conv_spec import ConvSpec
from cnnjax.layers.conv import IMPLS
from cnnjax.layers.conv_winograd import winograd_limits

log = logging.getLogger("cnnjax")


class Resolution(NamedTuple):
  path: str                # the Conv's module path, e.g. 'stage2_block1/Conv_0'
  requested: str           # the impl the model asked for
  used: str                # the impl that runs
  reason: Optional[str]    # why `used` differs from `requested` (the layer's geometry, 'auto''s table), else None


def resolve_impl(impl: str, spec: ConvSpec, backend: Optional[str] = None) -> Tuple[str, Optional[str]]:
  """(implementation used, reason or None) for a layer asking for `impl` on the convolution `spec`; 'auto'
  depends on `backend` (default: JAX's default backend)."""
  if impl not in IMPLS:
    raise ValueError(f"impl={impl!r} is not one of {IMPLS}")
  if impl == "auto":
    return autotune.resolve_auto(spec, backend)
  if impl == "winograd" and winograd_limits(spec):
    return "xla", geometry(spec)
  return impl, None


def geometry(spec: ConvSpec) -> str:
  """'3x3', '1x1 stride 2', '3x3 dilation 2', ...: what decides whether a limited implementation applies."""
  text = "x".join(map(str, spec.kernel_spatial))
  for name, v in (("stride", spec.strides), ("dilation", spec.rhs_dilation), ("input dilation", spec.lhs_dilation)):
    if any(i != 1 for i in v):
      text += f" {name} {v[0] if len(set(v)) == 1 else 'x'.join(map(str, v))}"
  return text


_ACTIVE: List[list] = []   # a stack of record lists, one per active recording()
_LOGGED = set()


@contextlib.contextmanager
def recording():
  """Collects the Resolution of every Conv traced inside the block (nested blocks each see their calls)."""
  records = []
  _ACTIVE.append(records)
  try:
    yield records
  finally:  # by identity: nested recordings hold equal lists
    del _ACTIVE[next(i for i, r in enumerate(_ACTIVE) if r is records)]


def record(resolution: Resolution) -> None:
  for records in _ACTIVE:
    records.append(resolution)


def describe(records) -> str:
  """The one-line summary of a model's resolutions (records of one trace)."""
  if not records:
    return "no convolutions"
  if all(r.requested == "auto" for r in records):
    used = collections.Counter(r.used for r in records)
    return (f"conv_impl=auto on {jax.default_backend()}: " +
            ", ".join(f"{u} {n}" for u, n in sorted(used.items(), key=lambda kv: (-kv[1], kv[0]))))
  requested = sorted({r.requested for r in records})
  fallback = collections.Counter(r.reason for r in records if r.reason is not None)
  line = f"conv_impl={'/'.join(requested)}: {len(records) - sum(fallback.values())} of {len(records)} convolutions"
  if fallback:
    used = sorted({r.used for r in records if r.reason is not None})
    line += (f"; {'/'.join(used)} for {sum(fallback.values())} (" +
             ", ".join(f"{g}: {n}" for g, n in sorted(fallback.items())) + ")")
  return line


def logs_conv_impls(call):
  """Decorates a model's `__call__` (under `nn.compact`): logs the plan once per model class and plan; a WARNING
  when some layers run another implementation than the one asked for, INFO otherwise, nothing for plain 'xla'."""
  @functools.wraps(call)
  def wrapped(self, *args, **kwargs):
    with recording() as records:
      out = call(self, *args, **kwargs)
    line = describe(records)
    key = (type(self).__name__, line)
    if records and any(r.requested != "xla" for r in records) and key not in _LOGGED:
      _LOGGED.add(key)
      level = logging.WARNING if any(r.reason and r.requested != "auto" for r in records) else logging.INFO
      log.log(level, "%s: %s", type(self).__name__, line)
    return out
  return wrapped


def workdir_record(records) -> dict:
  """What conv_impls.json holds: the backend, XLA_FLAGS, each layer's resolution (config.json says what was
  asked for; this says what ran) and, when a layer asked for 'auto' on CPU, the machine key its plan is cached
  under and where its decisions came from ('autotune': mode, file, shapes, measured, from_cache, undecided,
  plan_from_cache: every shape's decision was read from the cache)."""
  out = {"backend": jax.default_backend(), "xla_flags": os.environ.get("XLA_FLAGS", ""),
         "summary": describe(records), "layers": [r._asdict() for r in records]}
  if jax.default_backend() == "cpu" and any(r.requested == "auto" for r in records):
    st = autotune.state()
    out["machine"] = st.key
    out["autotune"] = dict(st.summary, mode=st.mode, file=str(st.file))
  return out
