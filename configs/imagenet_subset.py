"""ResNet-50 trained from scratch on a labelled subset of ImageNet: the supervised baselines of semi-supervised
learning papers, evaluated on the full ImageNet validation set (top-1 and top-5 every epoch).

  python -m experiments.main --config configs/imagenet_subset.py:10pct --workdir runs/r50-10pct \
      --config.dataset.data_dir=$DATA

Not measured here (no ImageNet on this project's machines): the numbers below are the papers'.

Numbers to reproduce (ResNet-50, supervised on the subset only, ImageNet validation top-5):
  - `:1pct`  (imagenet2012_subset/1pct, 12,811 images, ~13 per class): 48.4% top-5 (25.4% top-1)
  - `:10pct` (imagenet2012_subset/10pct, 128,116 images):              80.4% top-5 (56.4% top-1)
as reported by Zhai et al. 2019 ("S4L: Self-Supervised Semi-Supervised Learning", Table 1/2, supervised
baseline) and quoted in SimCLR's Table 7 (Chen et al. 2020, "Supervised baseline", label fraction 1% / 10%).
`:imagenette` (imagenette/320px-v2, 10 easy classes, 9,469 images) is the small sanity check that fits a
single GPU in minutes; fast.ai's leaderboard reports ~90% top-1 for ResNet-style nets at 128 px in 20 epochs.

Recipe (S4L's supervised baseline, Sec. 4 and its appendix: long schedules and strong weight decay, since the
subsets are small): SGD with momentum 0.9, batch 256 (scale the learning rate linearly with batch / 256),
linear warmup, weight decay 1e-3, random-resized 224 crops + flips, evaluated on a 224 center crop of the
256-resized image. 1pct: 1,000 epochs, 10pct: 200 epochs, step decay x0.1 at 70% / 85% / 95% of training. We
did not tune these on ImageNet (no ImageNet here): treat them as the starting point S4L describes, and compare
your curves with the numbers above.

How to run (the data cannot be downloaded automatically: ImageNet needs a login):
  1. Download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from image-net.org into
     $DATA/downloads/manual/, then prepare ArrayRecord files (no TensorFlow needed to *read* them later;
     `tfds build` itself uses TensorFlow, so run it once on any machine and copy the files):
       tfds build imagenet2012_subset/1pct --file_format=array_record --data_dir=$DATA \
         --manual_dir=$DATA/downloads/manual
     (and imagenet2012_subset/10pct; imagenette downloads by itself: tfds build imagenette/320px-v2 ...)
  2. One GPU host (all its GPUs) or a single TPU VM:
       python -m experiments.main --config configs/imagenet_subset.py:10pct --workdir runs/r50-10pct \
         --config.dataset.data_dir=$DATA
  3. A TPU pod slice: the same command on every host (`gcloud compute tpus tpu-vm ssh NAME --worker=all
     --command "..."`) with a gs:// workdir and data_dir; JAX finds the other hosts itself. GPU clusters under
     SLURM: `srun` the same command once per host. See docs/guide/scaling.md.
"""
from cnnjax.errors import ConfigError
from configs import resnet

SUBSETS = {"1pct": ("imagenet2012_subset/1pct", 1000), "10pct": ("imagenet2012_subset/10pct", 200)}


def get_config(preset: str = "10pct"):
  if preset == "imagenette":
    c = resnet.get_config("imagenette")
    c.model.name = "resnet50"
    c.dataset.image_size = 128
    c.eval_every_steps = -1
    return c
  if preset not in SUBSETS:
    raise ConfigError(f"unknown preset {preset!r} for configs/imagenet_subset.py; known: "
                     f"{sorted(SUBSETS) + ['imagenette']}")
  c = resnet.get_config("imagenet")
  c.dataset.name, c.num_epochs = SUBSETS[preset]
  c.model.name = "resnet50"
  c.batch_size = 256
  c.learning_rate = 0.1
  c.warmup_epochs = 5.0 if preset == "10pct" else 25.0
  c.weight_decay = 1e-3
  c.lr_schedule = "step"
  c.lr_boundaries_epochs = tuple(round(f * c.num_epochs) for f in (0.70, 0.85, 0.95))
  c.eval_every_steps = -1            # every epoch: top-1 and top-5 on the 50,000 validation images
  c.checkpoint_every_steps = -1
  return c
