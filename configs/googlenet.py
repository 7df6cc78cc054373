"""GoogLeNet / Inception v1 (Szegedy et al. 2015).

  python -m experiments.main --config configs/googlenet.py --workdir runs/googlenet

Not trained here: tests/test_configs.py builds each preset's model at its input size; the paper's numbers are below.

Presets: `:digits` (default: the paper layout on the embedded digits at 96x96, the smallest size at which the
auxiliary heads' 5x5/3 pool still fits; a smoke-scale run), `:imagenet` (paper layout), `:torchvision`
(torchvision's layout with batch norm, for imported weights).
Paper recipe (Sec. 6): asynchronous SGD, momentum 0.9, lr decreased 4% every 8 epochs, Polyak averaging, crops of
8%-100% area and 3/4-4/3 aspect ratio, photometric distortions; auxiliary losses weighted 0.3 (the loop's
`aux_loss_weight`); one model: 10.07% top-5 error on ILSVRC 2014 validation (Table 3 ensemble of 7: 6.67%).
"""
from cnnjax.errors import ConfigError
from configs import default, resnet


def get_config(preset: str = "digits"):
  if preset in ("imagenet", "torchvision"):
    c = resnet.get_config("imagenet")
    c.model = default.get_config().model
    c.lr_schedule = "step"
    c.lr_boundaries_epochs = tuple(range(8, 90, 8))
    c.lr_decay_factor = 0.96
  elif preset == "digits":
    c = default.get_config()
    c.dataset.name = "digits"
    c.dataset.image_size = 96
    c.batch_size = 32
    c.eval_batch_size = 128
    c.num_epochs = 3
    c.learning_rate = 0.01
  else:
    raise ConfigError(f"unknown preset {preset!r} for configs/googlenet.py; known: ['digits', 'imagenet', "
                     f"'torchvision']")
  c.model.name = "googlenet"
  c.model.layout = "torchvision" if preset == "torchvision" else "paper"
  c.model.aux_logits = True
  c.aux_loss_weight = 0.3
  return c
