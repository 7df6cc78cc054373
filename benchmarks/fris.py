"""FRiS-Stolp (cnnjax.fewshot.fris_stolp) on n x d features of k Gaussian classes: seconds per call.

  python -m benchmarks.fris [--n 10000] [--d 64] [--classes 10] [--separation 0.5] [--repeats 3]

Class centres are drawn with standard deviation `separation`, objects around them with standard deviation 1,
so the classes overlap and each needs several stolps. Prints the median wall seconds over repeats (and the process's
CPU seconds, steadier on a shared machine) (after one
untimed call that compiles the distance blocks), the number of stolps per class and the compactness.
"""
import argparse
import statistics
import time

import jax
import numpy as np

from cnnjax import fewshot


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--n", type=int, default=10000)
  ap.add_argument("--d", type=int, default=64)
  ap.add_argument("--classes", type=int, default=10)
  ap.add_argument("--separation", type=float, default=0.5)
  ap.add_argument("--repeats", type=int, default=3)
  a = ap.parse_args()
  rng = np.random.default_rng(0)
  labels = rng.integers(0, a.classes, a.n)
  centres = a.separation * rng.normal(size=(a.classes, a.d))
  x = (centres[labels] + rng.normal(size=(a.n, a.d))).astype(np.float32)
  stolps = fewshot.fris_stolp(x, labels)
  times, cpu = [], []
  for _ in range(a.repeats):
    t, c = time.perf_counter(), time.process_time()
    fewshot.fris_stolp(x, labels)
    times.append(time.perf_counter() - t)
    cpu.append(time.process_time() - c)
  t = time.perf_counter()
  comp = fewshot.compactness(x, labels)
  t_comp = time.perf_counter() - t
  print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}; {a.n} x {a.d} features, {a.classes} classes")
  print(f"fris_stolp: median {statistics.median(times):.2f} s over {a.repeats} (all: "
        f"{', '.join(f'{s:.2f}' for s in times)}; process CPU {statistics.median(cpu):.2f} s); "
        f"stolps per class {np.mean([len(v) for v in stolps.values()]):.1f}")
  print(f"compactness: {comp:.3f} in {t_comp:.2f} s")


if __name__ == "__main__":
  main()
