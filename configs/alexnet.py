"""AlexNet (Krizhevsky et al. 2012) and torchvision's one-column variant.

  python -m experiments.main --config configs/alexnet.py --workdir runs/alexnet

Not trained here: tests/test_configs.py builds each preset's model at its input size; the paper's numbers are below.

Presets: `:digits` (default: the two-column net on the embedded digits at 67x67, the smallest input its strides
allow with a 1x1 map before the classifier; a smoke-scale run), `:imagenet` (the paper's recipe).
Paper recipe (Sec. 5): 227x227 crops of 256x256 images + flips + PCA colour noise, batch 128, SGD momentum 0.9,
weight decay 5e-4, lr 0.01 divided by 10 when the validation error stopped improving (3 times), ~90 epochs,
dropout 0.5; top-1 / top-5 error 40.7% / 18.2% for one net (Table 2).
"""
from cnnjax.errors import ConfigError
from configs import default, resnet


def get_config(preset: str = "digits"):
  if preset == "imagenet":
    c = resnet.get_config("imagenet")
    c.model = default.get_config().model
    c.dataset.image_size = 227
    c.batch_size = 128
    c.learning_rate = 0.01
    c.weight_decay = 5e-4
    c.lr_boundaries_epochs = (30, 60, 80)
  elif preset == "digits":
    c = default.get_config()
    c.dataset.name = "digits"
    c.dataset.image_size = 67
    c.batch_size = 64
    c.eval_batch_size = 128
    c.num_epochs = 10
    c.learning_rate = 0.01
    c.weight_decay = 5e-4
  else:
    raise ConfigError(f"unknown preset {preset!r} for configs/alexnet.py; known: ['digits', 'imagenet']")
  c.model.name = "alexnet"
  c.model.dropout_rate = 0.5
  return c
