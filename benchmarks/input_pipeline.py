"""Input-pipeline throughput: ImageNet-style training preprocessing, the former path against the current one, and
the input rate a model's train step would need on this backend.

  python -m benchmarks.input_pipeline [--sizes 375x500,768x1024] [--per_example 48] [--repeats 3]
                                      [--batch 64] [--batches 8] [--workers 0,2] [--threads 4]
                                      [--need configs/resnet.py:imagenet] [--need_batch 16] [--need_steps 3]

The pipeline is `cnnjax.data.train_dataset` with the `configs/resnet.py:imagenet` preset (random-resized crop to
224 + flip, batches of `--batch`) on the 'synthetic' data set with `jpeg=True`: smooth random pictures with noise
of each `--sizes` (375x500 is ImageNet's typical size) stored as JPEG bytes and decoded per example, as TFDS's
ImageNet records are. Two paths, interleaved run by run so that the machine's load hits both alike:
  old  float32 batches normalised in the workers, every JPEG decoded at full size before the crop
       (`dataset.normalize_on_device=False, dataset.jpeg_draft=False`, the path before these options existed)
  new  uint8 batches normalised inside the jitted step, JPEGs decoded at 1/2-1/8 scale when the crop allows it
       (the defaults)
Rows: single-thread milliseconds per example (`--per_example` examples through decode + preprocessing in this
process: examples/s per core), then whole pipelines (`--workers` processes x `--threads` read threads; each run
times `--batches` batches after the first, worker start-up excluded). Medians of `--repeats` runs.

`--need SPEC` (a config file with optional preset, '' to skip) times `--need_steps` jitted train steps of that
config's model at its image size, batch `--need_batch`, on the current backend (`jax.default_backend()`) after
compiling, and prints the input rate the step consumes and the cores of this pipeline it would take: whether the
host can keep up, known before launching.
"""
import argparse
import os
import statistics
import time

import numpy as np

from cnnjax import data
from configs import resnet

PATHS = {"old": {"normalize_on_device": False, "jpeg_draft": False}, "new": {}}


def imagenet_like_config(batch: int, workers: int, threads: int, height: int, width: int, path: str = "new"):
  c = resnet.get_config("imagenet")
  c.dataset.name = "synthetic"
  c.dataset.synthetic.update(num_train=1_000_000, num_eval=1000, num_classes=1000, image_shape=(height, width, 3),
                             jpeg=True, seed=0)
  c.batch_size = batch
  c.dataset.num_workers = workers
  c.dataset.num_threads = threads
  c.dataset.prefetch = 2 * batch
  c.dataset.update(PATHS[path])
  return c


def per_example_ms(config, n: int, source=None) -> float:
  """Single-thread milliseconds per example of reading (decode included) and preprocessing `n` examples, as
  the pipeline's transform does them."""
  from cnnjax.data.pipeline import preprocess
  d = config.dataset
  src, info = source or data.get_source(d, "train")
  src = src.lazy() if d.jpeg_draft else src
  p = preprocess(d, info, d.augment, normalize=not d.normalize_on_device, draft=d.jpeg_draft)
  rng = np.random.default_rng(0)
  t0 = time.perf_counter()
  for i in range(n):
    p.random_map(src[i], rng)
  return 1e3 * (time.perf_counter() - t0) / n


def pipeline_rate(config, batches: int) -> float:
  """Examples/s of the whole training pipeline over `batches` batches after the first."""
  src, info = data.get_source(config.dataset, "train")
  it = iter(data.train_dataset(config, src, info))
  try:
    next(it)   # start-up: worker processes, first reads
    t0 = time.perf_counter()
    for _ in range(batches):
      next(it)
    return batches * config.batch_size / (time.perf_counter() - t0)
  finally:
    if hasattr(it, "close"):
      it.close()


def step_rate(config, batch: int, steps_n: int, repeats: int = 1):
  """Examples/s of `config`'s jitted train step (its model, optimizer and dtype, uint8 images normalised in the
  step as in training) at batch `batch` on the current backend, after compiling; one rate per repeat."""
  import jax  # here, not at the top: the pipeline-only measurements never load JAX's backends
  import jax.numpy as jnp
  from cnnjax import build
  size, classes = config.dataset.image_size, 1000
  info = data.DatasetInfo("bench", classes, (size, size, 3), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), ("train",))
  exp = build.experiment(config, info, 1000, 90_000)
  state, step = exp.init(0), exp.train_step()
  rng = np.random.default_rng(0)
  batch_ = {"image": jnp.asarray(rng.integers(0, 256, (batch, size, size, 3), np.uint8)),
            "label": jnp.asarray(rng.integers(0, classes, batch).astype(np.int32))}
  state, m = step(state, batch_)
  jax.block_until_ready(m)
  rates = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    for _ in range(steps_n):
      state, m = step(state, batch_)
    jax.block_until_ready(m)
    rates.append(batch * steps_n / (time.perf_counter() - t0))
  return rates


def compare_per_example(height: int, width: int, n: int, repeats: int):
  """{path: [ms per example, ...]} for old and new, interleaved."""
  configs = {p: imagenet_like_config(64, 0, 1, height, width, p) for p in PATHS}
  source = data.get_source(configs["new"].dataset, "train")   # the same JPEG pool for both
  out = {p: [] for p in PATHS}
  for _ in range(repeats):
    for p, c in configs.items():
      out[p].append(per_example_ms(c, n, source))
  return out


def compare_pipelines(height, width, batch, batches, workers, threads, repeats):
  out = {p: [] for p in PATHS}
  for _ in range(repeats):
    for p in PATHS:
      out[p].append(pipeline_rate(imagenet_like_config(batch, workers, threads, height, width, p), batches))
  return out


def _runs(xs, fmt="{:.0f}"):
  return ", ".join(fmt.format(x) for x in xs)


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--sizes", default="375x500,768x1024")
  ap.add_argument("--per_example", type=int, default=48)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--batch", type=int, default=64)
  ap.add_argument("--batches", type=int, default=8)
  ap.add_argument("--workers", default="0,2")
  ap.add_argument("--threads", default="4")
  ap.add_argument("--need", default="configs/resnet.py:imagenet")
  ap.add_argument("--need_batch", type=int, default=16)
  ap.add_argument("--need_steps", type=int, default=3)
  a = ap.parse_args()
  sizes = [tuple(int(v) for v in s.split("x")) for s in a.sizes.split(",") if s]
  per_core = None
  print(f"host: {os.cpu_count()} cores\n")
  if a.per_example:
    print("| image | old ms/example (runs) | new ms/example (runs) | old ex/s/core | new ex/s/core | new / old |")
    print("|---|---|---|---|---|---|")
  for h, w in sizes if a.per_example else []:
    r = compare_per_example(h, w, a.per_example, a.repeats)
    old, new = statistics.median(r["old"]), statistics.median(r["new"])
    per_core = per_core or 1e3 / new
    print(f"| {h}x{w} | {old:.2f} ({_runs(r['old'], '{:.1f}')}) | {new:.2f} ({_runs(r['new'], '{:.1f}')}) | "
          f"{1e3 / old:.0f} | {1e3 / new:.0f} | {old / new:.2f}x |", flush=True)
  rows = [(int(w), int(t)) for w in a.workers.split(",") if w for t in a.threads.split(",") if t]
  if rows and sizes:
    print("\n| image | workers | threads | old examples/s (runs) | new examples/s (runs) | new / old |")
    print("|---|---|---|---|---|---|")
  for h, wd in sizes if rows else []:
    for workers, threads in rows:
      r = compare_pipelines(h, wd, a.batch, a.batches, workers, threads, a.repeats)
      old, new = statistics.median(r["old"]), statistics.median(r["new"])
      print(f"| {h}x{wd} | {workers} | {threads} | {old:.0f} ({_runs(r['old'])}) | {new:.0f} ({_runs(r['new'])}) "
            f"| {new / old:.2f}x |", flush=True)
  if a.need:
    import jax
    from cnnjax import config as config_lib
    c = config_lib.load_file(a.need)
    rate = statistics.median(step_rate(c, a.need_batch, a.need_steps))
    print(f"\n{a.need} ({c.model.name}, {c.dataset.image_size} px, {c.dtype}, batch {a.need_batch}) on "
          f"{jax.default_backend()} ({jax.devices()[0].device_kind}): the train step consumes {rate:.1f} examples/s",
          end="")
    if per_core:
      print(f"; at {per_core:.0f} examples/s per core ({sizes[0][0]}x{sizes[0][1]} JPEGs, new path) that takes "
            f"{rate / per_core:.1f} cores of input (this host has {os.cpu_count()})")
    else:
      print()


if __name__ == "__main__":
  main()
