"""Every conv implementation against lax on ResNet-18/50 layer shapes: forward and forward+backward.

  python -m benchmarks.conv [--batch 8] [--repeats 5] [--impls direct,im2col,winograd,fft] [--shapes 3x3|1x1|all]

Prints, per layer shape, the median time of each implementation over interleaved repeats and its ratio to
'xla' (lax.conv_general_dilated) measured in the same run. Ratios, not seconds, are what to compare.
"""
import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax.layers import conv_general_dilated

# (name, H=W, Cin, Cout, k, stride): the 3x3 convs of ResNet-18's stages and ResNet-50's 1x1 convs.
SHAPES = [("r18 3x3 56x56x64", 56, 64, 64, 3, 1), ("r18 3x3 28x28x128", 28, 128, 128, 3, 1),
          ("r18 3x3 14x14x256", 14, 256, 256, 3, 1), ("r18 3x3 7x7x512", 7, 512, 512, 3, 1),
          ("r50 1x1 56x56 64->256", 56, 64, 256, 1, 1), ("r50 1x1 28x28 512->128", 28, 512, 128, 1, 1),
          ("r50 1x1 14x14 1024->256", 14, 1024, 256, 1, 1), ("r50 1x1 7x7 2048->512", 7, 2048, 512, 1, 1)]


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
  a = p.parse_args()
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
