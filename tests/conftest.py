"""Shared fixtures: a tiny, fast config on the embedded digits."""
import pytest

from cnnjax.layers import cpu_fast

cpu_fast.set_xla_flags()  # the project's CPU XLA flags, as the entry points set them, before jax starts


def tiny_config(**overrides):
  """configs/resnet.py with tests/_runner.TINY_FIELDS (ResNet-8 at half width on 8x8 digits), 6 steps, then
  `overrides` ({'dotted.field': value})."""
  from configs import resnet
  from tests._runner import TINY_FIELDS
  c = resnet.get_config()
  fields = {**TINY_FIELDS, "num_train_steps": 6, "log_every_steps": 2, "eval_every_steps": 3,
            "checkpoint_every_steps": 3, **overrides}
  for k, v in fields.items():
    node = c
    *path, last = k.split(".")
    for p in path:
      node = node[p]
    node[last] = v
  return c


def assert_resume_is_exact(config, tmp_path, stop_after: int):
  """Trains `config` straight through, and again stopped after `stop_after` steps and resumed: the final states
  are equal bit for bit. Returns the final state (numpy)."""
  import jax
  import numpy as np
  from cnnjax import checkpoint
  from cnnjax.train import loop
  loop.run(config, str(tmp_path / "straight"))
  loop.run(config, str(tmp_path / "resumed"), stop_after_steps=stop_after)
  loop.run(config, str(tmp_path / "resumed"))
  a, _ = checkpoint.load_numpy(str(tmp_path / "straight"))
  b, _ = checkpoint.load_numpy(str(tmp_path / "resumed"))
  jax.tree.map(np.testing.assert_array_equal, a, b)
  return a


@pytest.fixture
def make_config():
  return tiny_config
