"""Batch norm x residual connections x depth: the degradation experiment of He et al. 2016 (Sec. 4.2, Fig. 6).

The grid (field -> values) is `sweep`; `python -m experiments.sweep --config configs/ablation.py --workdir
runs/ablation` trains every combination as a normal run in runs/ablation/<settings>/. Default: CIFAR ResNets
20 and 56, residual on/off, batch norm on/off, on the embedded digits at 16x16 (so the whole grid runs on a
2-core CPU; docs/ablation.md has the measured curves). The paper's finding to reproduce: plain-56 trains
worse than plain-20 (higher training error), while ResNet-56 trains at least as well as ResNet-20.

An axis may set several fields together: here the runs without batch norm get a lower learning rate and
gradient-norm clipping at 1.0. Measured on 4-epoch trials of ResNet-20 without a norm (He initialisation):
lr 0.1 and 0.01 unclipped diverged or died (loss stuck at ln 10); lr 0.02 / 0.05 clipped at 1.0 reached 22% /
53% test top-1; zero-initialising the last conv of each block (`zero_init_residual`) made the signal vanish
instead (17% at lr 0.1, clipped). docs/ablation.md has the full runs.
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
             (("model.norm", "learning_rate", "grad_clip_norm"), (("batch", 0.1, 0.0), ("none", 0.05, 1.0))))
  return c
