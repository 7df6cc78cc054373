"""'auto' on CPU: each convolution's path measured on the machine at hand, once, and cached per machine.

Like `torch.backends.cudnn.benchmark`. The first time a layer's convolution (input and kernel shapes, strides,
padding, dilations, groups, dtype) is seen on a machine, `decide` times forward+backward of every candidate path
of cpu_fast.py that applies (plain lax 'xla', 'lax_cpu', 'polyphase', 'dot', 'im2col', 'winograd_f4',
'winograd_f2'), in interleaved rounds, on the layer's own shapes with an elementwise producer in front
(relu(x * scale): the batch norm and ReLU that precede nearly every convolution, which is what 'lax_cpu' is
about). The fastest is kept only if it beats plain lax by more than `MARGIN` (measured noise); otherwise, and for
a tie, the layer runs plain lax. Then `check_network` times the whole network under that plan against plain lax
once, and keeps the plan only if the network is faster under it (layers that win alone can lose together).

Decisions are cached in a JSON file per machine (`cache_file`), in the directory of JAX's compilation cache, named
by a hash of the machine key (`machine_key`: CPU model and instruction-set flags, jax and jaxlib versions,
XLA_FLAGS). A second run, or a restarted one, measures nothing. A file that cannot be read, or whose key is not
this machine's, is ignored with a warning and never trusted.

Modes (`model.conv_autotune`): 'measure' (decide what the cache lacks), 'cached' (cached decisions only, plain
lax for the rest: never measures), 'off' (plain lax). With several processes, process 0 decides and broadcasts,
so every process compiles the same program.

The layers call `resolve_auto` while they are traced; the training setup calls `collecting` around one trace of
the model and `decide` on what it saw, before the trace that is compiled.
"""
import contextlib
import hashlib
import json
import logging
import math
import os
import pathlib
import platform
import re
import statistics
import tempfile
import time
from typing import Callable, Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

from cnnjax.layers import conv_winograd, cpu_fast
from cnnjax.layers._conv_spec import ConvSpec

log = logging.getLogger("cnnjax")

MODES = ("measure", "cached", "off")
CHOICES = ("xla",) + cpu_fast.PATHS     # what a decision may name; 'xla' is plain lax
VERSION = 2   # 2: 'im2col' among the candidates, whole-network verdicts; a version-1 file is decided anew
# A candidate's ratio to plain lax (median over rounds of the paired ratios) must be below 1 - MARGIN. Noise,
# measured on a 2-core AMD EPYC (Zen 3) shared with other jobs: plain lax against a second compiled copy of
# itself on ResNet-20's layers at batch 128 (`python -m benchmarks.conv --noise`, 20 comparisons) gave ratios
# whose |ratio - 1| had median 0.08, 90th percentile 0.18, max 0.25. A 0.2 margin lets an equal path pass
# for a winner about 1 time in 10 (harmless: it is equal) and a path that is truly 10% slower almost never.
MARGIN = 0.2
# The whole network (check_network) must run at most 1 - NETWORK_MARGIN of plain lax's time under the per-layer
# plan. A train step sums dozens of layers, so it varies far less than one layer: VGG-16's one program timed in
# alternation with itself (quiet 2-core AMD EPYC Zen 4, benchmarks/RESULTS.md) gave 2.40-2.49 s a step, paired
# ratios within 0.98-1.02. A 0.05 margin keeps a plan only where it clearly gains.
NETWORK_MARGIN = 0.05
ROUNDS = 5                 # interleaved timing rounds per layer shape (medians over these)
MIN_SECONDS = 0.02         # each timing repeats the step until it lasts about this long (at most 10 calls)
_ISA = re.compile(r"^(avx|amx|sse|ssse|fma|f16c|bmi|adx|sha|aes|vaes|vpclmul|gfni|movbe|popcnt|vnni|neon|asimd|sve)")


def machine_key(cpuinfo: Optional[str] = None, xla_flags: Optional[str] = None) -> dict:
  """What a decision depends on: CPU model, its instruction-set flags, jax/jaxlib versions and XLA_FLAGS.
  `cpuinfo` defaults to /proc/cpuinfo's text (elsewhere: the platform's processor name, no flags)."""
  if cpuinfo is None:
    try:
      cpuinfo = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
      cpuinfo = ""
  fields = {}
  for line in cpuinfo.splitlines():
    name, sep, value = line.partition(":")
    if sep and name.strip() not in fields:
      fields[name.strip()] = value.strip()
  cpu = fields.get("model name") or fields.get("Model name") or platform.processor() or platform.machine()
  flags = (fields.get("flags") or fields.get("Features") or "").split()
  return {"cpu": cpu, "isa": sorted({f for f in flags if _ISA.match(f)}), "jax": jax.__version__,
          "jaxlib": jaxlib.__version__,
          "xla_flags": os.environ.get("XLA_FLAGS", "") if xla_flags is None else xla_flags}


def key_id(key: dict) -> str:
  return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def cache_file(compilation_cache_dir: str, key: dict) -> pathlib.Path:
  """The decisions' file for machine `key`: in the compilation cache's directory, or ~/.cache/cnnjax when there
  is none or it is a bucket URL."""
  d = compilation_cache_dir if compilation_cache_dir and "://" not in compilation_cache_dir else "~/.cache/cnnjax"
  return pathlib.Path(os.path.expanduser(d)).absolute() / f"conv_autotune-{key_id(key)}.json"


def spec_key(spec: ConvSpec) -> str:
  """A layer's convolution as a string: canonical shapes (N, *spatial, C), (*kernel, I, O), and the rest."""
  text = (f"in {spec.in_shape} kernel {spec.kernel_shape} strides {spec.strides} padding {spec.padding} "
          f"{jnp.dtype(spec.out_dtype).name}")
  if set(spec.lhs_dilation + spec.rhs_dilation) != {1}:
    text += f" dilation {spec.lhs_dilation} {spec.rhs_dilation}"
  if spec.feature_group_count != 1 or spec.batch_group_count != 1:
    text += f" groups {spec.feature_group_count} {spec.batch_group_count}"
  if spec.precision is not None:
    text += f" precision {spec.precision}"
  return text


def applies(path: str, spec: ConvSpec) -> bool:
  """Whether `path` computes the convolution `spec` (its geometry, regardless of speed)."""
  if path in ("xla", "lax_cpu"):
    return True
  if not cpu_fast.plain(spec):
    return False
  if path == "dot":
    return set(spec.kernel_spatial) == {1} and all(p == (0, 0) for p in spec.padding)
  if path == "polyphase":
    return max(spec.strides) > 1
  if path == "im2col":
    return max(spec.kernel_spatial) > 1
  if path in ("winograd_f4", "winograd_f2"):
    return not conv_winograd.winograd_limits(spec)
  return False


def candidates(spec: ConvSpec) -> Tuple[str, ...]:
  """The paths worth timing for `spec`: those that apply, less polyphase below an 8x8 output and Winograd below
  128 channels (cpu_fast.py: measured slower there, and Winograd's compile time would not be repaid), and
  im2col where its patches would exceed IM2COL_MAX_BYTES."""
  out = [p for p in CHOICES if applies(p, spec)]
  if min(spec.out_spatial) < cpu_fast.POLYPHASE_MIN_OUT and "polyphase" in out:
    out.remove("polyphase")
  if min(spec.in_shape[-1], spec.out_shape[-1]) < cpu_fast.WINOGRAD_MIN_CHANNELS:
    out = [p for p in out if not p.startswith("winograd")]
  patch_bytes = math.prod(spec.out_shape[:-1]) * math.prod(spec.kernel_shape[:-1]) * spec.compute_dtype.itemsize
  if patch_bytes > cpu_fast.IM2COL_MAX_BYTES and "im2col" in out:
    out.remove("im2col")
  return tuple(out)


def fwd_bwd(path: str, spec: ConvSpec):
  """The timed step of `path` on `spec`: gradients w.r.t. input and kernel of the convolution of relu(x * scale)
  (an elementwise producer, as batch norm and ReLU are in a network) against a cotangent."""
  def loss(x, w, scale, ct):
    return jnp.sum(cpu_fast.conv(path, spec, jax.nn.relu(x * scale), w).astype(jnp.float32) * ct)
  return jax.jit(jax.grad(loss, argnums=(0, 1)))


def _arguments(spec: ConvSpec):
  rng = np.random.default_rng(0)
  dtype = spec.out_dtype
  x = jnp.asarray(rng.normal(size=spec.in_shape), dtype)
  w = jnp.asarray(rng.normal(size=spec.kernel_shape) / math.sqrt(math.prod(spec.kernel_shape[:-1])), dtype)
  scale = jnp.asarray(rng.uniform(0.5, 1.5, size=spec.in_shape[-1]), dtype)
  ct = jnp.asarray(rng.normal(size=spec.out_shape), jnp.float32)
  return x, w, scale, ct


def measure(spec: ConvSpec, paths, timer: Callable[[], float] = time.perf_counter, make_fn=fwd_bwd) -> dict:
  """Seconds of one forward+backward per path in each of `ROUNDS` interleaved rounds (after a compiling call
  and a calibrating one): {path: [seconds per round]}."""
  args = _arguments(spec)
  fns = {}
  for p in paths:
    f = make_fn(p, spec)
    try:
      jax.block_until_ready(f(*args))   # compiles
    except Exception as e:  # pylint: disable=broad-except
      if p == "xla":
        raise
      log.warning("conv autotune: %s failed on %s (%s: %s); not a candidate", p, spec_key(spec), type(e).__name__, e)
      continue
    fns[p] = f
  return time_rounds(fns, args, timer)


def time_rounds(fns: Dict[str, Callable], args, timer: Callable[[], float] = time.perf_counter) -> dict:
  """{name: [seconds per call in each of `ROUNDS` interleaved rounds]} for compiled functions of `args`, each
  round repeating a call until it lasts about MIN_SECONDS (at most 10 calls, calibrated on one call each)."""
  once = {}
  for p, f in fns.items():
    t = timer()
    jax.block_until_ready(f(*args))
    once[p] = timer() - t
  calls = max(1, min(10, int(MIN_SECONDS / max(min(once.values()), 1e-9))))
  times = {p: [] for p in fns}
  for _ in range(ROUNDS):
    for p, f in fns.items():
      t = timer()
      for _ in range(calls):
        out = f(*args)
      jax.block_until_ready(out)
      times[p].append((timer() - t) / calls)
  return times


def ratios(times: Dict[str, List[float]]) -> Dict[str, float]:
  """Each path's time relative to plain lax ('xla'): the median over rounds of the ratio within a round (paired,
  so a load that slows one round slows both sides of its ratio)."""
  return {p: statistics.median(a / b for a, b in zip(v, times["xla"])) for p, v in times.items()}


def choose(times: Dict[str, List[float]]) -> str:
  """The path with the lowest ratio to plain lax if that is below 1 - MARGIN, else 'xla' (ties go to lax)."""
  r = ratios(times)
  best = min(r, key=r.get)
  return best if best != "xla" and r[best] < 1 - MARGIN else "xla"


class _State:
  """This process's mode, cache file and decisions ({spec key: {'path', 'ms', 'source'}})."""

  def __init__(self, mode: str = "cached", compilation_cache_dir: str = "~/.cache/cnnjax/jax",
               key: Optional[dict] = None):
    if mode not in MODES:
      raise ValueError(f"conv_autotune={mode!r} is not one of {MODES}")
    self.mode, self.compilation_cache_dir, self._key = mode, compilation_cache_dir, key
    self.decisions: Optional[Dict[str, dict]] = None    # loaded on first use
    self.networks: Optional[Dict[str, dict]] = None     # whole-network verdicts {plan key: {'keep', 'ratio'}}
    self.rejected = False                               # this process's network runs plain lax (check_network)
    self.summary: dict = {}                              # what the last `decide` did, for conv_impls.json

  @property
  def key(self) -> dict:
    if self._key is None:
      self._key = machine_key()
    return self._key

  @property
  def file(self) -> pathlib.Path:
    return cache_file(self.compilation_cache_dir, self.key)

  def loaded(self) -> Dict[str, dict]:
    if self.decisions is None:
      doc = _read_doc(self.file, self.key)
      self.decisions = {k: dict(v, source="cache") for k, v in _decisions(self.file, doc).items()}
      self.networks = _networks(doc)
    return self.decisions


_STATE = _State()
_COLLECTING: List[dict] = []
_LAX_ONLY: List[bool] = []


def configure(mode: str, compilation_cache_dir: str, key: Optional[dict] = None) -> None:
  """Sets this process's mode and cache location (`key`: the machine key, default `machine_key()`); decisions
  are read again from the cache on first use."""
  global _STATE
  _STATE = _State(mode, compilation_cache_dir, key)


def state() -> _State:
  return _STATE


def read(path: pathlib.Path, key: dict) -> Dict[str, dict]:
  """The decisions in `path` if it is a readable cache file for machine `key`; {} otherwise (with a warning for a
  damaged or foreign file, whose decisions are never used)."""
  return _decisions(path, _read_doc(path, key))


def _read_doc(path: pathlib.Path, key: dict) -> dict:
  """The cache file's content if it is a version-VERSION file for machine `key`, else {} (warned)."""
  try:
    doc = json.loads(path.read_text())
  except FileNotFoundError:
    return {}
  except (OSError, ValueError) as e:
    log.warning("conv autotune: ignoring %s, which cannot be read (%s); its shapes will be decided again", path, e)
    return {}
  if not isinstance(doc, dict) or doc.get("version") != VERSION or not isinstance(doc.get("decisions"), dict):
    log.warning("conv autotune: ignoring %s: not a version-%d decisions file", path, VERSION)
    return {}
  if doc.get("machine") != key:
    log.warning("conv autotune: ignoring %s: written for another machine or software (%s), not this one (%s)",
                path, doc.get("machine"), key)
    return {}
  return doc


def _decisions(path, doc: dict) -> Dict[str, dict]:
  decisions = doc.get("decisions", {})
  good = {k: v for k, v in decisions.items() if isinstance(v, dict) and v.get("path") in CHOICES
          and isinstance(v.get("ms", {}), dict) and all(isinstance(t, (int, float)) for t in v.get("ms", {}).values())}
  if len(good) != len(decisions):
    log.warning("conv autotune: %s: ignoring %d decisions that name no known path", path, len(decisions) - len(good))
  return good


def _networks(doc: dict) -> Dict[str, dict]:
  nets = doc.get("networks", {})
  return {k: v for k, v in (nets.items() if isinstance(nets, dict) else ())
          if isinstance(v, dict) and isinstance(v.get("keep"), bool)}


def write(path: pathlib.Path, key: dict, decisions: Dict[str, dict], networks: Optional[Dict[str, dict]] = None
          ) -> None:
  """Adds `decisions` and whole-network `networks` verdicts to the file (keeping those another run wrote
  meanwhile), atomically: a temporary file in the same directory, then a rename."""
  doc = _read_doc(path, key)
  merged = {**_decisions(path, doc), **{k: {f: v[f] for f in ("path", "ms")} for k, v in decisions.items()}}
  doc = {"version": VERSION, "machine": key, "margin": MARGIN, "decisions": merged,
         "networks": {**_networks(doc), **(networks or {})}}
  path.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=path.name + ".tmp-", delete=False) as f:
    json.dump(doc, f, indent=1, sort_keys=True)
  os.replace(f.name, path)


def resolve_auto(spec: ConvSpec, backend: Optional[str] = None) -> Tuple[str, str]:
  """(implementation or CPU path, why) that 'auto' runs for `spec` on `backend` (default: JAX's)."""
  backend = backend or jax.default_backend()
  if backend != "cpu":
    return "xla", f"auto on {backend}: lax"
  for specs in _COLLECTING:
    specs.setdefault(spec_key(spec), spec)
  st = _STATE
  if st.mode == "off":
    return "xla", "conv_autotune=off: lax"
  if st.rejected or _LAX_ONLY:
    return "xla", "autotune: the network is faster under plain lax (check_network): lax"
  d = st.loaded().get(spec_key(spec))
  if d is not None and applies(d["path"], spec):
    ms = ", ".join(f"{p} {v:.1f}" for p, v in sorted(d.get("ms", {}).items(), key=lambda kv: kv[1]))
    return d["path"], f"autotune ({d['source']}): {ms} ms"
  return "xla", f"not decided (conv_autotune={st.mode}): lax"


@contextlib.contextmanager
def collecting():
  """Collects {spec key: spec} of every convolution resolved by 'auto' on CPU inside the block, in order."""
  specs: dict = {}
  _COLLECTING.append(specs)
  try:
    yield specs
  finally:
    del _COLLECTING[next(i for i, s in enumerate(_COLLECTING) if s is specs)]


def decide(specs: Dict[str, ConvSpec], *, timer: Callable[[], float] = time.perf_counter, make_fn=fwd_bwd,
           broadcast=None) -> bool:
  """Makes sure every spec in `specs` has a decision (measuring, in 'measure' mode, what the cache lacks; process
  0 only, broadcast to the others with `broadcast`, default multihost_utils.broadcast_one_to_all, when there are
  several processes). Logs the cost once. Returns whether any layer's resolution changed (so the caller traces
  again)."""
  st = _STATE
  if st.mode == "off" or not specs:
    return False
  decisions = st.loaded()
  before = {k: decisions.get(k, {}).get("path", "xla") for k in specs}
  todo = [k for k in specs if k not in decisions] if st.mode == "measure" else []
  if jax.process_index() != 0:
    todo = []
  t0 = timer()
  new = {}
  for k in todo:
    paths = candidates(specs[k])
    times = measure(specs[k], paths, timer, make_fn) if len(paths) > 1 else {"xla": [float("nan")]}
    new[k] = {"path": choose(times), "ms": {p: round(statistics.median(t) * 1e3, 3) for p, t in times.items()},
              "source": "measured"}
    log.info("conv autotune: %s -> %s (%s)", k, new[k]["path"],
             ", ".join(f"{p} {v:.1f} ms" for p, v in new[k]["ms"].items()))
  spent = timer() - t0
  decisions.update(new)
  if new:
    write(st.file, st.key, new)
    log.info("autotuned %d shapes in %.0f s; cached in %s", len(new), spent, st.file)
  if jax.process_count() > 1:
    if broadcast is None:
      from jax.experimental import multihost_utils  # only for multi-process runs
      broadcast = multihost_utils.broadcast_one_to_all
    mine = np.array([CHOICES.index(decisions.get(k, {}).get("path", "xla")) for k in specs], np.int32)
    agreed = np.asarray(broadcast(mine))
    for k, i in zip(specs, agreed):
      if decisions.get(k, {}).get("path", "xla") != CHOICES[int(i)]:
        decisions[k] = {"path": CHOICES[int(i)], "ms": {}, "source": "process 0"}
  source = [decisions[k]["source"] if k in decisions else "undecided" for k in specs]
  st.summary = {"mode": st.mode, "file": str(st.file), "shapes": len(specs), "measured": len(new),
                "measure_seconds": round(spent, 1), "from_cache": source.count("cache"),
                "from_process_0": source.count("process 0"), "undecided": source.count("undecided"),
                "plan_from_cache": source.count("cache") == len(specs)}
  if not new and todo == [] and st.mode != "off":
    log.info("conv autotune: %d shapes, %d decided from %s", len(specs), st.summary["from_cache"], st.file)
  return any(decisions.get(k, {}).get("path", "xla") != before[k] for k in specs) or bool(new)


@contextlib.contextmanager
def lax_only():
  """Inside the block 'auto' resolves every convolution to plain lax (check_network's reference)."""
  _LAX_ONLY.append(True)
  try:
    yield
  finally:
    _LAX_ONLY.pop()


def plan_key(specs: Dict[str, ConvSpec]) -> str:
  """The per-layer plan of the convolutions in `specs` (each spec with its decided path) as a short hash."""
  decisions = _STATE.loaded()
  lines = sorted(f"{k} -> {decisions.get(k, {}).get('path', 'xla')}" for k in specs)
  return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def check_network(specs: Dict[str, ConvSpec], network: Callable[[], tuple], *,
                  timer: Callable[[], float] = time.perf_counter, broadcast=None) -> bool:
  """Whether this process's network keeps the per-layer plan of `specs`, or runs plain lax throughout (then every
  later 'auto' resolution in the process is lax, until `configure`). Layers that each beat lax alone can lose
  together (VGG-16 on a 2-core AMD Zen 4: Winograd and im2col layers each clearly faster alone, the train step
  1.10-1.43x slower; benchmarks/RESULTS.md). So under 'measure' the whole network is timed once per plan and machine:
  `network()` returns (make_fn, args), make_fn() compiling what is timed (a training run's own train step,
  loop.step_network; or the network's gradient, build.network_grad) under whatever 'auto' resolves to, called
  once under the plan and once under `lax_only`; the plan is kept only below
  1 - NETWORK_MARGIN of lax's time. The verdict is cached with the decisions; process 0's holds for all. A plan
  that is plain lax already, or has no verdict in 'cached' mode, is kept unmeasured."""
  st = _STATE
  decisions = st.loaded()
  if st.mode == "off" or all(decisions.get(k, {}).get("path", "xla") == "xla" for k in specs):
    return True
  key = plan_key(specs)
  verdict, source = st.networks.get(key), "cache"
  if verdict is None and st.mode == "measure" and jax.process_index() == 0:
    t0 = timer()
    make_fn, args = network()
    with lax_only():
      lax_fn = make_fn()
    times = time_rounds({"xla": lax_fn, "plan": make_fn()}, args, timer)
    ratio = ratios(times)["plan"]
    verdict, source = {"keep": bool(ratio < 1 - NETWORK_MARGIN), "ratio": round(ratio, 3)}, "measured"
    st.networks[key] = verdict
    write(st.file, st.key, {}, {key: verdict})
    log.info("conv autotune: the whole network under the plan takes %.2fx plain lax's time: %s (checked in %.0f s)",
             ratio, "plan kept" if verdict["keep"] else "plain lax instead", timer() - t0)
  keep, source = (True, "unchecked") if verdict is None else (verdict["keep"], source)
  if jax.process_count() > 1:
    if broadcast is None:
      from jax.experimental import multihost_utils  # only for multi-process runs
      broadcast = multihost_utils.broadcast_one_to_all
    keep = bool(np.asarray(broadcast(np.array(keep))))
    source = source if jax.process_index() == 0 else "process 0"
  st.rejected = not keep
  st.summary["network"] = {"keep": keep, "ratio": None if verdict is None else verdict["ratio"], "source": source,
                           "plan": key}
  return keep
