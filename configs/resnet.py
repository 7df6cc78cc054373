"""ResNet experiments. Default: CIFAR ResNet-20 (He et al. 2016, Sec. 4.2) on the embedded handwritten digits.

Default (`--config configs/resnet.py`): ResNet-20, option-A shortcuts, batch norm, digits resized to 32x32
with pad-2 random crops, SGD + Nesterov momentum 0.9, lr 0.1 cosine, weight decay 5e-4, batch 64, 15 epochs.
It runs in a few minutes on a 2-core CPU and reaches >= 95% test top-1 (measured numbers: README.md).

The paper's CIFAR-10 recipe (Sec. 4.2): batch 128, lr 0.1 divided by 10 at 32k and 48k iterations, stopped at
64k, weight decay 1e-4, momentum 0.9, 4-pixel pad + random crop + flip; ResNet-20 reaches 8.75% test error,
ResNet-56 6.97%, ResNet-110 6.43% (Table 6).
"""
from ml_collections import config_dict

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
  else:
    raise ValueError(f"unknown preset {preset!r} for configs/resnet.py; known: ['digits']")
  return c
