"""The prepared accelerator check: one command, under 8 minutes on one GPU, that writes a markdown report.

  python -m benchmarks.device_check [--out runs/device_check/report.md] [--budget_s 420] [--dry-run]

Sections, in this order, each timed; a failing section is recorded in the report (its error's last lines) and the
next one runs; a section that no longer fits the budget is skipped with a note. The report is rewritten after
every section, so a run cut short still leaves what it measured.
  1. versions: Python, jax/jaxlib (and `jax.print_environment_info`: CUDA, driver, nvidia-smi), flax, optax, orbax,
     grain, torch (its CUDA and cuDNN), the devices, the host's cores; modules missing for the project.
  2. the ResNet-50 train step at 224 px (batch 64): the project's step (benchmarks/train_step.py's machinery:
     `cnnjax.train.steps.make_train_step`, jitted, state donated) in float32 and bfloat16 (config.dtype: float32
     parameters, bfloat16 compute), against PyTorch on the same GPU in channels_last, float32 and bf16 autocast,
     and torch.compile when the budget leaves time; images/s interleaved, each against PyTorch's best.
  3. the input pipeline: examples/s of `cnnjax.data.train_dataset` (ImageNet preset, 375x500 JPEGs to 224, uint8
     batches) with `dataset.num_workers` = the host's cores, the one-core rate, and the cores the bf16 step
     of section 2 would need.
  4. the README's default run, short: `python -m experiments.main --config configs/resnet.py` for 2 epochs;
     wall time, examples/s, input_wait, and what conv_impl 'auto' resolved to (conv_impls.json: plain lax on GPU).
  5. the GPU tests of the suite: `pytest -m gpu` (tests/test_gpu.py).

`--dry-run`: the same code on the CPU with small shapes (a 10-layer CIFAR ResNet at 16 px, batch 2, instead of
ResNet-50, 4 steps of the default run at 8 px, 64x80 JPEGs, eager PyTorch only), in about a minute: so the script
cannot rot between the rare slots on a GPU machine (tests/test_device_check.py runs it).

## The GPU machine has no network: bring the missing wheels

It has Python 3.12 with jax 0.11.2 (CUDA 13), flax, optax, orbax-checkpoint and torch, but not grain,
ml-collections, tensorflow-datasets, array-record or tensorboardX (section 1 lists what is missing). On a machine
with network, in the repository root (`wheels/` is git-ignored, and the device runner carries ignored folders only
when asked):

  pip download --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 \\
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \\
      --platform any -d wheels/ grain==0.2.18 ml-collections==1.1.0 tensorflow-datasets==4.9.10 \\
      array-record==0.8.6 tensorboardX==2.6.5

(dependencies resolved for Python 3.12; `--no-deps` takes only the five, when the box has their dependencies),
then on the GPU machine, before this script:

  pip install --no-index --find-links wheels/ grain ml-collections tensorflow-datasets array-record tensorboardX
  python -m benchmarks.device_check --out $OUT/report.md

`--no-index --find-links` installs only what is missing and never replaces the box's jax, flax or torch.
"""
import argparse
import contextlib
import importlib
import importlib.util
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # leave GPU memory to torch and the subprocesses

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NEEDED = ("grain", "ml_collections", "tensorflow_datasets", "array_record", "tensorboardX", "sklearn", "tqdm",
          "etils", "absl", "PIL", "matplotlib", "safetensors", "pytest", "torch")
# Seconds each section is expected to take on the GPU machine (compiles included): a section starts only if the
# budget left covers it, so the command ends inside its slot.
EXPECTED_S = {"versions": 10, "train_step": 150, "torch_compile": 90, "input": 45, "default_run": 60, "gpu_tests": 120}


class Report:
  """Markdown sections, written to `path` after each one."""

  def __init__(self, path: str, dry_run: bool):
    self.path, self.parts, self.t0 = path, [], time.perf_counter()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    self.add(f"# Device check{' (dry run, CPU, small shapes)' if dry_run else ''}\n\n"
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; `python -m benchmarks.device_check"
             f"{' --dry-run' if dry_run else ''}`\n")

  def elapsed(self) -> float:
    return time.perf_counter() - self.t0

  def add(self, text: str) -> None:
    self.parts.append(text)
    with open(self.path, "w") as f:
      f.write("\n".join(self.parts) + "\n")

  def section(self, title: str, fn, *args) -> None:
    t = time.perf_counter()
    try:
      body = fn(*args)
    except Exception:  # pylint: disable=broad-except  # one failing section must not lose the others
      body = "**failed**:\n\n```\n" + "".join(traceback.format_exc().splitlines(True)[-25:]) + "```\n"
    self.add(f"## {title}\n\n{body}\n_{time.perf_counter() - t:.0f} s (total {self.elapsed():.0f} s)_\n")
    print(f"[device_check] {title}: done at {self.elapsed():.0f} s", flush=True)


def versions() -> str:
  import jax
  lines = [f"- Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} host cores "
           f"({_cpu_model()})"]
  for mod in ("jax", "jaxlib", "flax", "optax", "orbax.checkpoint", "grain", "numpy", "torch", "PIL"):
    try:
      m = importlib.import_module(mod)
      lines.append(f"- {mod} {getattr(m, '__version__', '?')}")
    except ImportError as e:
      lines.append(f"- {mod}: not importable ({e})")
  devices = jax.devices()
  lines.append(f"- backend {jax.default_backend()}: {len(devices)} x {devices[0].device_kind}")
  with contextlib.suppress(ImportError):
    import torch
    if torch.cuda.is_available():
      lines.append(f"- torch CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
                   f"{torch.cuda.get_device_name(0)}")
  missing = [m for m in NEEDED if importlib.util.find_spec(m) is None]
  lines.append(f"- modules missing: {', '.join(missing) if missing else 'none'}")
  env = io.StringIO()
  with contextlib.redirect_stdout(env):
    jax.print_environment_info()
  return "\n".join(lines) + "\n\n```\n" + env.getvalue()[-3000:] + "```\n"


def _cpu_model() -> str:
  with contextlib.suppress(OSError):
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  return platform.processor() or "unknown CPU"


def train_step(dry: bool, budget_left: float, state: dict) -> str:
  """Interleaved images/s of the JAX step (float32, bfloat16) and PyTorch's on the same device."""
  import jax
  from benchmarks import train_step as ts
  name, size, batch = ("resnet10_cifar", 16, 2) if dry else ("resnet50", 224, 64)
  steps_n, repeats = (1, 1) if dry else (10, 3)
  device = "cuda" if jax.default_backend() == "gpu" else "cpu"
  systems, firsts, n_params = {}, {}, None
  impl = "xla" if dry else "auto"  # 'auto' is plain lax off the CPU; on the CPU it would measure (minutes)
  for dtype in ("float32", "bfloat16"):
    systems[f"jax {dtype}"], _, firsts[f"jax {dtype}"], _, n_params, _ = ts.jax_step(name, impl, None, dtype, size,
                                                                                     batch)
  modes = ["eager"] if dry else ["channels_last"]
  if not dry and budget_left > EXPECTED_S["train_step"] + EXPECTED_S["torch_compile"]:
    modes.append("compiled")
  for mode in modes:
    for amp in (False, True):
      key = f"torch {mode} {'bf16 autocast' if amp else 'float32'}"
      systems[key], firsts[key] = ts.torch_step(name, mode, n_params, device, amp, size, batch)
  for f in systems.values():
    f(1)
  times = {k: [] for k in systems}
  for _ in range(repeats):
    for k, f in systems.items():
      t = time.perf_counter()
      f(steps_n)
      times[k].append((time.perf_counter() - t) / steps_n)
  ips = {k: batch / statistics.median(v) for k, v in times.items()}
  half = lambda k: "bf16" in k or "bfloat16" in k
  best = {h: max(v for k, v in ips.items() if k.startswith("torch") and half(k) == h) for h in (False, True)}
  state["bf16_rate"] = ips["jax bfloat16"]
  rows = [f"{name} at {size} px, batch {batch}, SGD momentum, {steps_n} steps x {repeats} interleaved repeats "
          f"(median) on {device}; PyTorch modes: {', '.join(modes)}\n",
          "| system | images/s | / PyTorch's best of its dtype | first step (s) |", "|---|---|---|---|"]
  for k, v in ips.items():
    ref = best[half(k)]
    rows.append(f"| {k} | {v:.1f} | {v / ref:.2f}x | {firsts[k]:.1f} |")
  return "\n".join(rows) + "\n"


def input_pipeline(dry: bool, state: dict) -> str:
  from benchmarks import input_pipeline as ip
  h, w = (64, 80) if dry else (375, 500)
  batch, batches = (4, 2) if dry else (64, 10)
  workers = 0 if dry else os.cpu_count()
  per_core = 1e3 / ip.per_example_ms(ip.imagenet_like_config(batch, 0, 1, h, w), 8 if dry else 48)
  rate = ip.pipeline_rate(ip.imagenet_like_config(batch, workers, 4, h, w), batches)
  lines = [f"- one core (this process, decode + preprocessing): {per_core:.0f} examples/s ({h}x{w} JPEGs to 224)",
           f"- whole pipeline, num_workers={workers}, 4 read threads, batch {batch}: {rate:.0f} examples/s"]
  need = state.get("bf16_rate")
  if need:
    lines.append(f"- the bf16 train step of the section above consumes {need:.0f} examples/s: "
                 f"{need / per_core:.1f} cores at the one-core rate; the pipeline delivers {rate / need:.2f}x that "
                 f"({'keeps up' if rate >= need else 'input-bound'})")
  return "\n".join(lines) + "\n"


def default_run(dry: bool) -> str:
  """The README's first command, short, in a subprocess (as a user runs it)."""
  from tests import helpers
  with tempfile.TemporaryDirectory() as tmp:
    work = os.path.join(tmp, "resnet")
    over = (helpers.TINY + ["--config.num_train_steps=4", "--config.log_every_steps=2"] if dry else
            ["--config.num_epochs=2", "--config.progress_bar=False"])
    cmd = [sys.executable, "-m", "experiments.main", "--config", "configs/resnet.py", "--workdir", work, *over]
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True, text=True,
                       timeout=300)
    wall = time.perf_counter() - t
    if r.returncode:
      return f"**exit {r.returncode}** after {wall:.0f} s:\n\n```\n{r.stderr[-3000:]}\n```\n"
    entries = [json.loads(x) for x in open(os.path.join(work, "metrics.jsonl"))]
    train = [e for e in entries if e["split"] == "train"]
    ev = [e for e in entries if e["split"] == "eval"]
    plan = json.load(open(os.path.join(work, "conv_impls.json")))
  used = sorted({p["used"] for p in plan["layers"]})
  expect = "" if plan["backend"] == "cpu" else (": plain lax, as intended" if used == ["xla"] else
                                                 ": **expected plain lax ('xla') on an accelerator**")
  return (f"`{' '.join(cmd[1:4])} ... {' '.join(over)}`: {wall:.0f} s wall (start-up and compile included), "
          f"{len(train)} train entries; last: {train[-1]['examples_per_sec']:.0f} examples/s, input_wait "
          f"{train[-1]['input_wait']:.1%}; eval top-1 {ev[-1]['top1']:.4f}.\n\n"
          f"conv_impl 'auto' resolved on backend {plan['backend']} to: {', '.join(used)} "
          f"({len(plan['layers'])} layers){expect}\n")


def gpu_tests(dry: bool) -> str:
  cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "-rs", "tests/test_gpu.py"]
  r = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True, text=True,
                     timeout=300)
  return f"`{' '.join(cmd[2:])}`: exit {r.returncode}\n\n```\n{r.stdout[-2500:]}\n```\n"


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--out", default=os.path.join(ROOT, "runs", "device_check", "report.md"))
  ap.add_argument("--budget_s", type=float, default=420.0, help="stop starting sections after this (s)")
  ap.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true")
  a = ap.parse_args(argv)
  if a.dry_run:
    os.environ["JAX_PLATFORMS"] = "cpu"
    sys.path.insert(0, ROOT)
    from cnnjax.layers import cpu_fast
    cpu_fast.set_xla_flags()   # the CPU flags the entry points set (the subprocesses set their own)
  rep, state = Report(a.out, a.dry_run), {}
  plan = [("Versions", "versions", versions, ()),
          ("Train step: JAX vs PyTorch", "train_step", lambda: train_step(a.dry_run, a.budget_s - rep.elapsed(),
                                                                             state), ()),
          ("Input pipeline", "input", input_pipeline, (a.dry_run, state)),
          ("Default run (short)", "default_run", default_run, (a.dry_run,)),
          ("GPU tests", "gpu_tests", gpu_tests, (a.dry_run,))]
  for title, key, fn, args in plan:
    if rep.elapsed() + EXPECTED_S[key] > a.budget_s and not a.dry_run:
      rep.add(f"## {title}\n\nskipped: {rep.elapsed():.0f} s spent of the {a.budget_s:.0f} s budget\n")
      continue
    rep.section(title, fn, *args)
  print(f"[device_check] report: {a.out}")
  return rep


if __name__ == "__main__":
  main()
