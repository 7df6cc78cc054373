"""Shared fixtures: a tiny, fast config on the embedded digits."""
import tempfile

import pytest

from cnnjax.layers import autotune, cpu_fast
from configs import default

cpu_fast.set_xla_flags()  # the project's CPU XLA flags, as the entry points set them, before jax starts

# Tests never measure convolutions ('auto' runs what a cache holds, lax otherwise): every config built in this
# process says conv_autotune='cached' (the subprocess runs get it from tests/_runner.TINY_FIELDS), and code that
# traces models outside a run reads an empty cache, not the user's.
_default_config = default.get_config


def _tests_config():
  c = _default_config()
  c.model.conv_autotune = "cached"
  return c


default.get_config = _tests_config
autotune.configure("cached", tempfile.mkdtemp(prefix="cnnjax-test-autotune-"))


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


def force_autotune_plan(directory, monkeypatch, plan):
  """Makes conv_impl='auto' run `plan` ({ConvSpec: path}) on CPU, read from a cache file in `directory` as a
  (fake) machine's decisions would be; the autotuner's state is restored after the test."""
  key = {"cpu": "Test CPU", "isa": [], "jax": "0", "jaxlib": "0", "xla_flags": ""}
  monkeypatch.setattr(autotune, "_STATE", autotune.state())
  autotune.write(autotune.cache_file(str(directory), key), key,
                 {autotune.spec_key(s): {"path": p, "ms": {}} for s, p in plan.items()})
  autotune.configure("cached", str(directory), key=key)


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
