"""Input-pipeline throughput: ImageNet-style training preprocessing vs. what a ResNet-50 train step consumes.

  python -m benchmarks.input_pipeline [--batch 64] [--batches 12] [--workers 0,1,2] [--threads 1,4]
                                      [--model_batch 16] [--model_steps 4] [--skip_model]

The pipeline is `cnnjax.data.train_dataset` with the `configs/resnet.py:imagenet` preset (random-resized crop to
224 + flip, ImageNet normalisation, batching) on the 'synthetic' data set with `jpeg=True`: smooth random
pictures of ImageNet's typical size (375x500) stored as JPEG bytes and decoded per example, as TFDS's ImageNet
records are. Each row times `--batches` batches after the first (worker start-up excluded); the median of
`--repeats` runs is printed. The model row times `--model_steps` jitted ResNet-50 train steps (SGD, batch norm,
float32) after compilation. On a machine where training and input share the CPU cores, the sum of the two
per-example costs is what matters; the table prints both.
"""
import argparse
import statistics
import time

import numpy as np

from cnnjax import data
from configs import resnet


def imagenet_like_config(batch: int, workers: int, threads: int, height: int, width: int):
  c = resnet.get_config("imagenet")
  c.dataset.name = "synthetic"
  c.dataset.synthetic.update(num_train=1_000_000, num_eval=1000, num_classes=1000, image_shape=(height, width, 3),
                             jpeg=True, seed=0)
  c.batch_size = batch
  c.dataset.num_workers = workers
  c.dataset.num_threads = threads
  c.dataset.prefetch = 2 * batch
  return c


def per_example_costs(config, n: int = 64):
  """Single-thread milliseconds per example of (decode) and (crop + resize + flip + normalise)."""
  from cnnjax.data.pipeline import preprocess
  src, info = data.get_source(config.dataset, "train")
  t0 = time.perf_counter()
  images = [src[i] for i in range(n)]
  t1 = time.perf_counter()
  p = preprocess(config.dataset, info, config.dataset.augment)
  rng = np.random.default_rng(0)
  for r in images:
    p.random_map(r, rng)
  t2 = time.perf_counter()
  sizes = [len(src.source[i]["image"]) for i in range(n)]
  return 1e3 * (t1 - t0) / n, 1e3 * (t2 - t1) / n, float(np.mean(sizes))


def pipeline_rate(config, batches: int) -> float:
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


def model_rate(batch: int, steps_n: int, size: int = 224, repeats: int = 1):
  import jax
  import jax.numpy as jnp
  from cnnjax import models
  from cnnjax import config as config_lib
  from cnnjax.train import optim, state as state_lib, steps
  c = resnet.get_config("imagenet")
  c.batch_size = batch
  model = models.create(c.model.name, num_classes=1000, **config_lib.model_options(c))
  tx, schedule = optim.build(c, 1000, 90_000)
  state = jax.jit(lambda k: state_lib.create(k, model, tx, (size, size, 3)))(jax.random.PRNGKey(0))
  step = jax.jit(steps.make_train_step(model, tx, schedule), donate_argnums=0)
  rng = np.random.default_rng(0)
  batch_ = {"image": jnp.asarray(rng.standard_normal((batch, size, size, 3), np.float32)),
            "label": jnp.asarray(rng.integers(0, 1000, batch).astype(np.int32))}
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


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--batch", type=int, default=64)
  ap.add_argument("--batches", type=int, default=12)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--workers", default="0,1,2")
  ap.add_argument("--threads", default="1,4")
  ap.add_argument("--height", type=int, default=375)
  ap.add_argument("--width", type=int, default=500)
  ap.add_argument("--model_batch", type=int, default=16)
  ap.add_argument("--model_steps", type=int, default=4)
  ap.add_argument("--model_repeats", type=int, default=1)
  ap.add_argument("--skip_model", action="store_true")
  ap.add_argument("--skip_pipeline", action="store_true")
  a = ap.parse_args()
  if a.skip_pipeline:
    a.workers = a.threads = ""

  base = imagenet_like_config(a.batch, 0, 1, a.height, a.width)
  if not a.skip_pipeline:
    dec, aug, nbytes = per_example_costs(base)
    print(f"per example, one thread: decode {dec:.2f} ms ({a.height}x{a.width} JPEG, {nbytes / 1e3:.0f} kB mean), "
          f"random-resized crop + flip + normalise to 224 {aug:.2f} ms -> {1e3 / (dec + aug):.0f} examples/s/core")
    print()
    print("| workers | threads | examples/s (median) | runs |")
    print("|---|---|---|---|")
  for w in [int(x) for x in a.workers.split(",") if x]:
    for t in [int(x) for x in a.threads.split(",") if x]:
      rates = [pipeline_rate(imagenet_like_config(a.batch, w, t, a.height, a.width), a.batches)
               for _ in range(a.repeats)]
      print(f"| {w} | {t} | {statistics.median(rates):.0f} | {', '.join(f'{r:.0f}' for r in rates)} |", flush=True)
  if not a.skip_model:
    rates = model_rate(a.model_batch, a.model_steps, repeats=a.model_repeats)
    print(f"\nResNet-50 train step at 224x224, batch {a.model_batch}, float32: {statistics.median(rates):.2f} "
          f"examples/s (median; runs {', '.join(f'{r:.2f}' for r in rates)})")


if __name__ == "__main__":
  main()
