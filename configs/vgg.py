"""VGG (Simonyan & Zisserman 2015), any column of Table 1 via `--config.model.name` (vgg_a ... vgg_e, vgg11..19,
*_bn).

  python -m experiments.main --config configs/vgg.py --workdir runs/vgg11

Not trained here: tests/test_configs.py builds each preset's model at its input size; the paper's numbers are below.

Presets: `:digits` (default: VGG-11 with batch norm on the embedded digits at 32x32, where the five pools leave
a 1x1 map; the classifier still sees 7x7x512 through the adaptive pool, as torchvision's), `:imagenet`.
Paper recipe (Sec. 3.1): batch 256, SGD momentum 0.9, weight decay 5e-4, dropout 0.5 on the first two FC layers,
lr 0.01 divided by 10 three times on plateaus, 74 epochs, 224 crops of rescaled images + flips + colour shift;
deeper columns initialised from column A. Single-scale top-1/top-5 error (Table 3): A 29.6/10.4, B 28.7/9.9,
C 28.1/9.4, D 27.0/8.8, E 27.3/9.0.
"""
from cnnjax.errors import ConfigError
from configs import default, resnet


def get_config(preset: str = "digits"):
  if preset == "imagenet":
    c = resnet.get_config("imagenet")
    c.model = default.get_config().model
    c.model.name = "vgg16"
    c.learning_rate = 0.01
    c.weight_decay = 5e-4
    c.num_epochs = 74
    c.lr_boundaries_epochs = (30, 50, 65)
  elif preset == "digits":
    c = default.get_config()
    c.model.name = "vgg11_bn"
    c.dataset.name = "digits"
    c.dataset.image_size = 32
    c.dataset.augment = "pad_crop"
    c.batch_size = 64
    c.eval_batch_size = 128
    c.num_epochs = 5
    c.learning_rate = 0.01
    c.weight_decay = 5e-4
  else:
    raise ConfigError(f"unknown preset {preset!r} for configs/vgg.py; known: ['digits', 'imagenet']")
  c.model.dropout_rate = 0.5
  return c
