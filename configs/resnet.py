"""ResNet experiments. Default: CIFAR ResNet-20 (He et al. 2016, Sec. 4.2) on the embedded handwritten digits.

  python -m experiments.main --config configs/resnet.py --workdir runs/resnet

Measured (2-core AMD EPYC Zen 3, jax 0.10.2): 3 min 0 s (8 s of it autotuning, once per machine), 98.59% test
top-1 on the 355 test digits, 100% top-5.
`:fashion_mnist` trained on classes 0-4 only (`'--config.dataset.classes=(0,1,2,3,4)' --config.num_epochs=8`)
reached 94.2% on their test images (docs/transfer.md); 6-epoch ResNets and plain nets of 20-56 layers at this
preset's recipe: configs/ablation.py:fashion_mnist, docs/depth.md.

Default: ResNet-20, option-A shortcuts, batch norm, digits resized to 32x32 with pad-2 random crops, SGD +
Nesterov momentum 0.9, lr 0.1 cosine, weight decay 5e-4, batch 64, 15 epochs.

The paper's CIFAR-10 recipe (Sec. 4.2): batch 128, lr 0.1 divided by 10 at 32k and 48k iterations, stopped at
64k, weight decay 1e-4, momentum 0.9, 4-pixel pad + random crop + flip; ResNet-20 reaches 8.75% test error,
ResNet-56 6.97%, ResNet-110 6.43% (Table 6).

Presets (`--config configs/resnet.py:NAME`) switch the data set, the input size, the augmentation and the model
together: `cifar10` and `cifar100` (the Sec. 4.2 recipe above), `mnist`, `fashion_mnist` (native 28x28; the Sec. 4.2
augmentation, 4-pixel pad + random crop + flip),
`imagenette` (ResNet-18 at 128 px), `imagenet`, `imagenet_1pct`, `imagenet_10pct` (ResNet-50, Sec. 3.4: 224 px
random-resized crops + flip, 224/256 center-crop evaluation, lr 0.1 / 10 at epochs 30 and 60, 90 epochs),
`imagenet_v2` (ImageNet training, ImageNetV2 evaluation), `imagenet32`, `imagenet64` (downsampled ImageNet with a
CIFAR ResNet-56) and `synthetic` (random data). TFDS data sets must be prepared first; the error says how.
"""
from ml_collections import config_dict

from cnnjax.errors import ConfigError
from configs import default


def get_config(preset: str = "digits"):
  c = default.get_config()
  c.model.name = "resnet20"
  c.model.residual = True
  c.model.norm = "batch"
  c.model.shortcut = "A"
  c.model.zero_init_residual = False
  c.model.width = 1.0
  c.model.stage_sizes = config_dict.placeholder(tuple)  # None: the named model's (e.g. (3, 3, 3) for resnet20)
  if preset == "digits":
    c.dataset.name = "digits"
    c.dataset.image_size = 32
    c.dataset.augment = "pad_crop"   # no flips: a mirrored digit is another symbol
    c.batch_size = 64
    c.eval_batch_size = 128
    c.num_epochs = 15
    c.learning_rate = 0.1
    c.weight_decay = 5e-4
    c.log_every_steps = 5
  elif preset in ("cifar10", "cifar100"):
    # Sec. 4.2: batch 128, lr 0.1 / 10 at 32k and 48k iterations, stop at 64k, wd 1e-4, pad-4 crop + flip.
    c.dataset.name = preset
    c.dataset.image_size = 32
    c.dataset.augment = "pad_crop_flip"
    c.batch_size = 128
    c.num_train_steps = 64_000
    c.lr_schedule = "step"
    c.lr_boundaries_epochs = (32_000 / 390, 48_000 / 390)   # 50,000 / 128 = 390 steps per epoch
    c.nesterov = False
  elif preset in ("mnist", "fashion_mnist"):
    # Native 28x28 (28 -> 14 -> 7 through the three stages) rather than 32: no interpolation of the pixels
    # and (32/28)^2 = 1.31x fewer FLOPs per step, which matters for the depth experiments on a CPU.
    c.dataset.name = preset
    c.dataset.image_size = 28
    # Digits lose their class when mirrored; clothes keep it, so Fashion-MNIST gets the Sec. 4.2 flips too.
    c.dataset.augment = "pad_crop" if preset == "mnist" else "pad_crop_flip"
    c.batch_size = 128
    c.num_epochs = 15
  elif preset in ("imagenette", "imagenet", "imagenet_1pct", "imagenet_10pct", "imagenet_v2"):
    # Sec. 3.4: batch 256, lr 0.1 / 10 at epochs 30 and 60 (stopped at 90 as torchvision), wd 1e-4, momentum
    # 0.9, random-resized 224 crops + flip, evaluated on a 224 center crop of the 256-resized image.
    c.model.name = "resnet50"
    c.model.shortcut = "B"
    c.dataset.name = {"imagenette": "imagenette/320px-v2", "imagenet_1pct": "imagenet2012_subset/1pct",
                      "imagenet_10pct": "imagenet2012_subset/10pct"}.get(preset, "imagenet2012")
    c.dataset.train_split = "train"
    c.dataset.eval_split = "validation"
    if preset == "imagenet_v2":        # train on ImageNet, evaluate on ImageNetV2 (Recht et al. 2019)
      c.dataset.eval_name = "imagenet_v2/matched-frequency"
      c.dataset.eval_split = "test"
    c.dataset.image_size = 224
    c.dataset.augment = "inception_crop_flip"
    c.dataset.eval_augment = "center_crop"
    c.dataset.num_workers = 2
    c.batch_size = 256
    c.eval_batch_size = 250              # 50,000 / 250: no padding on ImageNet's validation set
    c.num_epochs = 90
    c.lr_schedule = "step"
    c.lr_boundaries_epochs = (30, 60)
    c.nesterov = False
    c.log_every_steps = 100
    if preset == "imagenette":           # 10 classes, 9,469 training images: smaller net, images and batch
      c.model.name = "resnet18"
      c.dataset.image_size = 128
      c.batch_size = 64
      c.eval_batch_size = 128
      c.num_epochs = 40
      c.lr_schedule = "cosine"
      c.log_every_steps = 20
  elif preset in ("imagenet32", "imagenet64"):
    # Downsampled ImageNet (Chrabaszcz et al. 2017) with a CIFAR-style ResNet: native size, pad crop + flip.
    side = int(preset[len("imagenet"):])
    c.model.name = "resnet56"
    c.dataset.name = f"imagenet_resized/{side}x{side}"
    c.dataset.eval_split = "validation"
    c.dataset.image_size = side
    c.dataset.augment = "pad_crop_flip"
    c.batch_size = 256
    c.num_epochs = 40
    c.log_every_steps = 100
  elif preset == "synthetic":          # random data for smoke tests and benchmarks
    c.dataset.name = "synthetic"
    c.dataset.image_size = 32
    c.dataset.augment = "pad_crop_flip"
    c.batch_size = 64
    c.num_epochs = 1
  else:
    raise ConfigError(f"unknown preset {preset!r} for configs/resnet.py; known: {PRESETS}")
  return c


PRESETS = ("digits", "cifar10", "cifar100", "mnist", "fashion_mnist", "imagenette", "imagenet", "imagenet_1pct",
           "imagenet_10pct", "imagenet_v2", "imagenet32", "imagenet64", "synthetic")
