"""Figures of what the networks see (cnnjax.viz), as PNGs with titles and colour bars.

  python -m experiments.visualize --out docs/visualize [--workdir W] [--layers REGEX] [--index I] [--batch N]

Always: kernels_digits.png (the course's hand-made kernels on a digit; kernels_fashion_mnist.png too when
/usr/share/datasets/fashion-mnist holds the IDX files) and maxpool_gradient.png (the lecture's 4x4 example).
With --workdir (a training workdir: config.json + checkpoints/): filters.png (first convolution), feature_maps.png
(the layers whose path matches --layers, for eval example --index) and dead_maps.png + dead_maps.md (per layer,
channels that are zero everywhere over the first --batch eval examples, for every conv, pool and block).
"""
import gzip
import os

import numpy as np
from absl import flags

from cnnjax import build, cli, viz

FASHION_DIR = "/usr/share/datasets/fashion-mnist"


def fashion_image(index: int = 0):
  """One Fashion-MNIST test image (28x28, values 0..1) from the IDX file, or None when it is not installed."""
  path = os.path.join(FASHION_DIR, "t10k-images-idx3-ubyte.gz")
  if not os.path.exists(path):
    return None
  with gzip.open(path, "rb") as f:
    raw = f.read(16 + 28 * 28 * (index + 1))
  return np.frombuffer(raw, np.uint8, offset=16 + 28 * 28 * index).reshape(28, 28) / 255.0


def kernel_figures(out: str, impl: str):
  from sklearn.datasets import load_digits
  digit = load_digits().images[0] / 16.0
  pngs = [viz.plot_kernels(digit, viz.apply_kernels(digit, impl), os.path.join(out, "kernels_digits.png"),
                           f"hand-made kernels on a digit (8x8, sklearn digits #0), cross-correlation, impl={impl}")]
  fashion = fashion_image()
  if fashion is not None:
    pngs.append(viz.plot_kernels(fashion, viz.apply_kernels(fashion, impl),
                                 os.path.join(out, "kernels_fashion_mnist.png"),
                                 f"hand-made kernels on Fashion-MNIST test #0 (28x28), impl={impl}"))
  return pngs


def workdir_figures(workdir: str, out: str, layers: str, index: int, batch: int):
  model, variables, config, info = build.load_workdir(workdir)
  images, labels = viz.eval_images(config, info, limit=max(batch, index + 1))
  name = f"{config.model.name} on {config.dataset.name}, {os.path.basename(os.path.normpath(workdir))}"
  pngs = [viz.plot_workdir_filters(workdir, os.path.join(out, "filters.png"))]
  chosen = viz.feature_maps(model, variables, images[index:index + 1], layers)
  pngs.append(viz.plot_feature_maps(images[index], chosen, os.path.join(out, "feature_maps.png"),
                                    f"feature maps for eval example {index} (label {labels[index]}), {name}"))
  maps = viz.feature_maps(model, variables, images[:batch])
  dead = viz.dead_maps(maps)
  totals = {k: m.shape[-1] for k, m in maps.items()}
  pngs.append(viz.plot_dead_maps(dead, totals, os.path.join(out, "dead_maps.png"),
                                 f"dead (all-zero) maps over {len(images[:batch])} eval examples, {name}"))
  md = os.path.join(out, "dead_maps.md")
  with open(md, "w") as f:
    f.write("| layer | output shape | dead maps | dead channel indices |\n|---|---|---|---|\n")
    for k, m in maps.items():
      f.write(f"| {k} | {tuple(m.shape[1:])} | {len(dead[k])}/{totals[k]} | {list(dead[k])} |\n")
  return pngs + [md]


def define_flags(fv: flags.FlagValues) -> flags.FlagValues:
  flags.DEFINE_string("out", None, "output folder for the PNGs (and dead_maps.md)", flag_values=fv)
  flags.DEFINE_string("workdir", None, "a training workdir: also write filters.png, feature_maps.png, dead_maps.png "
                      "and dead_maps.md", flag_values=fv)
  flags.DEFINE_string("layers", r"stem_conv|stage\d_block\d", "regex on module paths (whole path) for "
                      "feature_maps.png", flag_values=fv)
  flags.DEFINE_integer("index", 0, "eval example shown in feature_maps.png", flag_values=fv)
  flags.DEFINE_integer("batch", 256, "eval examples over which dead maps are counted", flag_values=fv)
  flags.DEFINE_string("impl", "direct", "convolution implementation for the hand-made kernels", flag_values=fv)
  flags.mark_flag_as_required("out", flag_values=fv)
  return fv


def main(argv=None):
  """The command on `argv` (without the program name), as a function."""
  return cli.call(define_flags, run, argv)


def run(a, args):
  if args:
    raise SystemExit(f"error: unexpected arguments {args}")
  os.makedirs(a.out, exist_ok=True)
  pngs = kernel_figures(a.out, a.impl)
  x = viz.LECTURE_POOL_INPUT
  pngs.append(viz.plot_maxpool(x, *viz.maxpool_routing(x), os.path.join(a.out, "maxpool_gradient.png")))
  if a.workdir:
    pngs += workdir_figures(a.workdir, a.out, a.layers, a.index, a.batch)
  for f in pngs:
    print("wrote", f)


if __name__ == "__main__":
  cli.program(define_flags, run)
