"""Batch norm x residual connections x depth: the degradation experiment of He et al. 2016 (Sec. 4.2, Fig. 6).

The grid (field -> values) is `sweep`; `python -m experiments.sweep --config configs/ablation.py --workdir
runs/ablation` trains every combination as a normal run in runs/ablation/<settings>/. Default: CIFAR ResNets
20 and 56, residual on/off, batch norm on/off, on the embedded digits at 16x16 (so the whole grid runs on a
2-core CPU; docs/ablation.md has the measured curves). The paper's finding to reproduce: plain-56 trains
worse than plain-20 (higher training error), while ResNet-56 trains at least as well as ResNet-20.

An axis may set several fields together: here the runs without batch norm get a lower learning rate and
zero-initialised last convolutions in their residual blocks (without a norm, each residual block would
otherwise add its full variance and a 56-layer ResNet's activations would explode at initialisation; plain
nets keep He initialisation, since `zero_init_residual` has no effect without a skip path).
"""
from configs import resnet


def get_config(preset: str = "digits"):
  c = resnet.get_config(preset)
  c.dataset.image_size = 16
  c.dataset.augment = "pad_crop"
  c.num_epochs = 12
  c.batch_size = 64
  c.learning_rate = 0.1
  c.warmup_epochs = 1.0      # keeps the first steps of the deep nets stable
  c.eval_every_steps = -1    # every epoch
  c.log_every_steps = 5
  c.sweep = (("model.name", ("resnet20", "resnet56")),
             ("model.residual", (True, False)),
             (("model.norm", "learning_rate", "model.zero_init_residual"),
              (("batch", 0.1, False), ("none", 0.02, True))))
  return c
