"""Every conv implementation against lax on ResNet-18/50 layer shapes: forward and forward+backward; and the
table of `conv_impl='auto'`'s CPU paths.

  python -m benchmarks.conv [--batch 8] [--repeats 5] [--impls direct,im2col,winograd,fft] [--shapes 3x3|1x1|all]
  python -m benchmarks.conv --table [--write_table] [--repeats 3] [--only 3x3|1x1]
  python -m benchmarks.conv --noise [--repeats 4]

Prints, per layer shape, the median time of each implementation over interleaved repeats and its ratio to
'xla' (lax.conv_general_dilated) measured in the same run. Ratios, not seconds, are what to compare.

--table times forward+backward of each CPU path of cnnjax/layers/cpu_fast.py that fits (lax_cpu, polyphase,
dot, winograd_f4, winograd_f2) on the layer shapes of the benchmarked train steps (ResNet-18 CIFAR batch 128,
ResNet-50 224 px batch 16, VGG-16 64 px batch 32), interleaved; --write_table stores the fastest per shape in
cnnjax/layers/cpu_table.json, a record of one machine (named in it); 'auto' does not read it, it measures on each
machine itself (cnnjax/layers/autotune.py).

--noise times plain lax against a second compiled copy of itself with the autotuner's own timing
(`autotune.measure`: interleaved rounds, medians) on the default run's layer shapes (ResNet-20, batch 128),
`--repeats` times per shape: the spread of the ratio is the noise the autotuner's MARGIN must exceed.
"""
import argparse
import datetime
import json
import pathlib
import platform
import statistics
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax.layers import autotune, conv_general_dilated, cpu_fast
from cnnjax.layers._conv_spec import make_spec

TABLE_PATH = pathlib.Path(cpu_fast.__file__).with_name("cpu_table.json")

# (name, H=W, Cin, Cout, k, stride): the 3x3 convs of ResNet-18's stages and ResNet-50's 1x1 convs.
SHAPES = [("r18 3x3 56x56x64", 56, 64, 64, 3, 1), ("r18 3x3 28x28x128", 28, 128, 128, 3, 1),
          ("r18 3x3 14x14x256", 14, 256, 256, 3, 1), ("r18 3x3 7x7x512", 7, 512, 512, 3, 1),
          ("r50 1x1 56x56 64->256", 56, 64, 256, 1, 1), ("r50 1x1 28x28 512->128", 28, 512, 128, 1, 1),
          ("r50 1x1 14x14 1024->256", 14, 1024, 256, 1, 1), ("r50 1x1 7x7 2048->512", 7, 2048, 512, 1, 1)]


# (batch, output H=W, Cin, Cout, k, stride) of the train steps' convolutions (benchmarks/train_step.py) and of
# the default run (configs/resnet.py: ResNet-20, 32x32, batch 64).
TABLE_SHAPES = [
    (64, 32, 16, 16, 3, 1), (64, 16, 32, 32, 3, 1), (64, 8, 64, 64, 3, 1),
    (128, 32, 64, 64, 3, 1), (128, 16, 128, 128, 3, 1), (128, 8, 256, 256, 3, 1), (128, 4, 512, 512, 3, 1),
    (16, 56, 64, 64, 3, 1), (16, 28, 128, 128, 3, 1), (16, 14, 256, 256, 3, 1), (16, 7, 512, 512, 3, 1),
    (32, 64, 64, 64, 3, 1), (32, 32, 128, 128, 3, 1), (32, 16, 256, 256, 3, 1), (32, 8, 512, 512, 3, 1),
    (16, 56, 64, 256, 1, 1), (16, 56, 256, 64, 1, 1), (16, 28, 512, 128, 1, 1), (16, 28, 128, 512, 1, 1),
    (16, 14, 1024, 256, 1, 1), (16, 14, 256, 1024, 1, 1), (16, 7, 2048, 512, 1, 1), (16, 7, 512, 2048, 1, 1),
    (16, 28, 256, 512, 1, 2), (16, 14, 512, 1024, 1, 2), (16, 7, 1024, 2048, 1, 2), (128, 16, 64, 128, 1, 2)]


def _path_fn(path, spec):
  f = lambda x, w: cpu_fast.conv(path, spec, x, w)
  return jax.jit(jax.grad(lambda x, w: jnp.sum(f(x, w) ** 2), argnums=(0, 1)))


def table(a):
  """Times every fitting CPU path per TABLE_SHAPES entry; returns the table's entries."""
  entries = []
  for n, hw, cin, cout, k, s in TABLE_SHAPES:
    if a.only and f"{k}x{k}" != a.only:
      continue
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(n, hw * s, hw * s, cin)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(k, k, cin, cout)) / np.sqrt(k * k * cin), jnp.float32)
    spec = make_spec(x, w, (s, s), "SAME" if k > 1 else "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    paths = [p for p in cpu_fast.PATHS if cpu_fast._fits(p, spec) and (p != "polyphase" or s > 1)]
    fns = {p: _path_fn(p, spec) for p in paths}
    times = {p: [] for p in paths}
    for _ in range(a.repeats):
      for p in paths:
        times[p].append(_time(fns[p], x, w, n=2))
    ms = {p: round(statistics.median(t) * 1e3, 2) for p, t in times.items()}
    best = min(ms, key=ms.get)
    entries.append(dict(kernel=k, stride=s, hw=hw, cin=cin, cout=cout, batch=n, best=best, ms=ms))
    print(f"{k}x{k} s{s} {hw}x{hw} {cin}->{cout} batch {n}: " +
          ", ".join(f"{p} {t:.1f} ms ({t / ms['lax_cpu']:.2f}x)" for p, t in ms.items()) + f" -> {best}",
          flush=True)
  return entries


def write_table(entries):
  cpu = subprocess.run("lscpu | grep 'Model name'", shell=True, capture_output=True, text=True).stdout
  doc = {"measured_by": "python -m benchmarks.conv --table --write_table",
         "cpu": " ".join(cpu.split()[2:]) or platform.processor(), "jax": jax.__version__,
         "date": datetime.date.today().isoformat(), "xla_flags": cpu_fast.set_xla_flags(),
         "what": "forward+backward median ms of each CPU path per layer shape; 'best' is what conv_impl='auto' "
                 "takes for the nearest shape of the same kernel size and stride",
         "entries": entries}
  TABLE_PATH.write_text(json.dumps(doc, indent=1) + "\n")
  print(f"wrote {TABLE_PATH}")


# (batch, input H=W, Cin, Cout, stride): the 3x3 convolutions of ResNet-20 (configs/resnet.py) at batch 128.
NOISE_SHAPES = [(128, 32, 16, 16, 1), (128, 32, 16, 32, 2), (128, 16, 32, 32, 1), (128, 16, 32, 64, 2),
                (128, 8, 64, 64, 1)]


def noise(a):
  """The autotuner's ratio of the same path to itself (plain lax, two compiled copies), `a.repeats` times per
  shape."""
  ratios = []
  for n, hw, cin, cout, s in NOISE_SHAPES:
    x, w = jax.ShapeDtypeStruct((n, hw, hw, cin), jnp.float32), jax.ShapeDtypeStruct((3, 3, cin, cout), jnp.float32)
    spec = make_spec(x, w, (s, s), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    make = lambda path, spec: autotune.fwd_bwd("xla", spec)   # 'a' and 'b': two jitted copies of lax
    got = []
    for _ in range(a.repeats):
      times = autotune.measure(spec, ("xla", "b"), make_fn=make)
      got.append(autotune.ratios(times)["b"])
    ratios += got
    print(f"3x3 s{s} {hw}x{hw} {cin}->{cout} batch {n}: lax {statistics.median(times['xla']) * 1e3:.1f} ms; "
          f"copy / lax (median of paired ratios) " +
          " ".join(f"{r:.3f}" for r in got), flush=True)
  dev = sorted(abs(r - 1) for r in ratios)
  print(f"|ratio - 1| over {len(ratios)} comparisons: median {statistics.median(dev):.3f}, "
        f"90th percentile {dev[int(0.9 * (len(dev) - 1))]:.3f}, max {dev[-1]:.3f}; autotune.MARGIN = "
        f"{autotune.MARGIN}")


def _fns(impl, stride):
  dn = ("NHWC", "HWIO", "NHWC")
  f = lambda x, w: conv_general_dilated(x, w, (stride, stride), "SAME", dimension_numbers=dn, impl=impl)
  fwd = jax.jit(f)
  fb = jax.jit(jax.grad(lambda x, w: jnp.sum(f(x, w) ** 2), argnums=(0, 1)))
  return fwd, fb


def _time(fn, *args, n=3):
  jax.block_until_ready(fn(*args))
  t = time.perf_counter()
  for _ in range(n):
    out = fn(*args)
  jax.block_until_ready(out)
  return (time.perf_counter() - t) / n


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--impls", default="direct,im2col,winograd,fft")
  p.add_argument("--shapes", default="all", choices=("3x3", "1x1", "all"))
  p.add_argument("--table", action="store_true", help="time the CPU paths of conv_impl='auto' instead")
  p.add_argument("--write_table", action="store_true", help="with --table: store cnnjax/layers/cpu_table.json")
  p.add_argument("--only", default="", choices=("", "3x3", "1x1"), help="with --table: only these kernels")
  p.add_argument("--noise", action="store_true", help="the timing noise of the autotuner: lax against lax")
  a = p.parse_args()
  if a.noise:
    return noise(a)
  if a.table:
    entries = table(a)
    if a.write_table:
      write_table(entries)
    return
  impls = ["xla"] + a.impls.split(",")
  print(f"jax {jax.__version__}, {jax.devices()[0].platform}, batch {a.batch}, {a.repeats} interleaved repeats, "
        f"median ms (ratio to xla)")
  print(f"{'layer':26s} {'pass':8s} " + " ".join(f"{i:>18s}" for i in impls))
  for name, hw, cin, cout, k, s in SHAPES:
    if a.shapes != "all" and f"{k}x{k}" != a.shapes:
      continue
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(a.batch, hw, hw, cin)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(k, k, cin, cout)) / np.sqrt(k * k * cin), jnp.float32)
    ok = [i for i in impls if not (i == "winograd" and (k != 3 or s != 1))]
    fns = {i: _fns(i, s) for i in ok}
    times = {(i, m): [] for i in ok for m in (0, 1)}
    for _ in range(a.repeats):
      for i in ok:
        for m in (0, 1):
          times[(i, m)].append(_time(fns[i][m], x, w))
    for m, label in ((0, "fwd"), (1, "fwd+bwd")):
      ref = statistics.median(times[("xla", m)])
      cells = []
      for i in impls:
        if i not in ok:
          cells.append(f"{'n/a':>18s}")
        else:
          t = statistics.median(times[(i, m)])
          cells.append(f"{t * 1e3:9.2f} ({t / ref:5.2f}x)")
      print(f"{name:26s} {label:8s} " + " ".join(cells), flush=True)


if __name__ == "__main__":
  main()
