"""Shared fixtures: a tiny, fast config on the embedded digits."""
import os
import tempfile

import pytest

import cnnjax  # noqa: F401  (sets XLA flags before jax initialises)


def tiny_config(**overrides):
  """ResNet-8 at half width on 8x8 digits: a few seconds per run on 2 CPU cores."""
  from configs import resnet
  c = resnet.get_config()
  c.model.width = 0.5
  c.model.stage_sizes = (1, 1, 1)  # ResNet-8: the CIFAR layout with one block per stage
  c.dataset.image_size = 8
  c.dataset.augment = "none"
  c.batch_size = 32
  c.eval_batch_size = 64
  c.num_train_steps = 6
  c.log_every_steps = 2
  c.eval_every_steps = 3
  c.checkpoint_every_steps = 3
  c.learning_rate = 0.05
  c.progress_bar = False
  c.compilation_cache_dir = os.path.join(tempfile.gettempdir(), "cnnjax-test-jax-cache")
  for k, v in overrides.items():
    node = c
    *path, last = k.split(".")
    for p in path:
      node = node[p]
    node[last] = v
  return c


@pytest.fixture
def make_config():
  return tiny_config
