"""Training recipes: EMA of the weights, Mixup/CutMix, TrivialAugmentWide, random erasing (docs/guide/recipes.md).

  python -m experiments.sweep --config configs/recipes.py:fashion_mnist --workdir runs/recipes

Not yet measured at its full budget (15 runs of about 20 minutes each on 2 cores).

Presets (`--config configs/recipes.py:NAME`):

`fashion_mnist` (default): a sweep. ResNet-20 on Fashion-MNIST with the 6-epoch recipe of the depth experiment
(configs/ablation.py:fashion_mnist: batch 128, SGD + Nesterov 0.9, lr 0.1 with 0.5 epochs of warm-up then cosine,
weight decay 1e-4, pad-4 crop + flip) as the baseline, and that recipe + EMA, + Mixup/CutMix, + TrivialAugment,
and all three; 3 seeds per row (15 runs), seed-major so that a stopped sweep has whole seeds first:

  python -m experiments.sweep --config configs/recipes.py:fashion_mnist --workdir runs/recipes
  python -m experiments.plot runs/recipes \
    --baseline "decay=0.0, mixup.alpha=0.0, cutmix.alpha=0.0, trivial_augment=False"

The additions, at this budget (2,808 steps): EMA decay 0.998 (a horizon of about 500 steps, one epoch) from the end of
the first epoch; Mixup alpha 0.2 and CutMix alpha 1.0, one of the two per batch (torchvision's reference values);
TrivialAugmentWide after the crop and flip.

`imagenet_resnet50`: torchvision's "new recipe" for ResNet-50 on ImageNet (the reference scripts' command for
the 80.9% weights, torchvision 0.13): 600 epochs, batch 1024, SGD momentum 0.9 at lr 0.5 with 5 linear warm-up
epochs then cosine, weight decay 2e-5 and none on the norms and biases, label smoothing 0.1, Mixup 0.2 / CutMix
1.0, TrivialAugmentWide, random erasing 0.1, EMA of the weights. UNVERIFIED HERE: there is no ImageNet on this
machine, so it has never been trained with cnnjax. It differs from torchvision's command where cnnjax has no
equivalent: one image size for training and evaluation (224, evaluated on the central 87.5%; torchvision trains
at 176 and evaluates at 224 from 232), no repeated-augmentation sampler, biases also exempt from weight decay,
and the EMA updated every step with decay 0.99997 (torchvision: every 32 steps with its decay 0.99998 scaled by
batch x 32 / epochs, about 0.99891 per 32 steps = 0.999966 per step), starting after the warm-up as theirs.
"""
from cnnjax.errors import ConfigError
from configs import ablation, resnet

PRESETS = ("fashion_mnist", "imagenet_resnet50")

RECIPE_FIELDS = ("ema.decay", "mixup.alpha", "cutmix.alpha", "dataset.trivial_augment")
BASELINE = (0.0, 0.0, 0.0, False)
RECIPE_ROWS = (BASELINE,                    # the 6-epoch recipe as it is
               (0.998, 0.0, 0.0, False),    # + EMA
               (0.0, 0.2, 1.0, False),      # + Mixup/CutMix
               (0.0, 0.0, 0.0, True),       # + TrivialAugmentWide
               (0.998, 0.2, 1.0, True))     # all three


def get_config(preset: str = "fashion_mnist"):
  if preset == "fashion_mnist":
    return _fashion_mnist()
  if preset == "imagenet_resnet50":
    return _imagenet_resnet50()
  raise ConfigError(f"unknown preset {preset!r} for configs/recipes.py; known: {PRESETS}")


def _fashion_mnist():
  c = ablation.get_config("fashion_mnist")   # the depth experiment's 6-epoch recipe ...
  c.model.name = "resnet20"                  # ... for ResNet-20 with batch norm
  c.model.residual = True
  c.model.norm = "batch"
  c.learning_rate = 0.1
  c.grad_clip_norm = 0.0
  c.ema.start_step = 468                     # one epoch (60,000 / 128 steps): the average starts from trained weights
  c.mixup.switch_prob = 0.5
  c.checkpoint_every_steps = 117             # 4 per epoch: a stopped sweep loses little
  c.sweep = (("seed", (0, 1, 2)), (RECIPE_FIELDS, RECIPE_ROWS))
  return c


def _imagenet_resnet50():
  c = resnet.get_config("imagenet")
  c.num_epochs = 600
  c.batch_size = 1024
  c.learning_rate = 0.5
  c.lr_schedule = "cosine"
  c.warmup_epochs = 5.0
  c.momentum = 0.9
  c.nesterov = False
  c.weight_decay = 2e-5
  c.weight_decay_norm_and_bias = False
  c.label_smoothing = 0.1
  c.mixup.alpha = 0.2
  c.cutmix.alpha = 1.0
  c.mixup.switch_prob = 0.5
  c.dataset.augment = "inception_crop_flip"
  c.dataset.trivial_augment = True
  c.dataset.random_erasing = 0.1
  c.ema.decay = 0.99997
  c.ema.start_step = 5 * (1_281_167 // 1024)   # after the warm-up epochs, as torchvision's
  c.keep_checkpoints = 2
  return c
