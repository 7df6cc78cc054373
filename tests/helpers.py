"""What many tests share, in one place: the repository root, a tiny config, running an entry point, a free port,
reading a run's metrics, the bit-exact resume check, and model variables drawn without compiling initialisers."""
import os
import socket
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(tempfile.gettempdir(), "cnnjax-test-jax-cache")

# The tiny run every test starts from: ResNet-8 at half width on 8x8 digits, a few seconds on 2 CPU cores.
# tiny_config applies it to configs/resnet.py in process; TINY gives it as command-line overrides.
TINY_FIELDS = {"model.width": 0.5, "model.stage_sizes": (1, 1, 1), "dataset.image_size": 8,
               "dataset.augment": "none", "batch_size": 32, "eval_batch_size": 64, "learning_rate": 0.05,
               "progress_bar": False, "compilation_cache_dir": CACHE, "model.conv_autotune": "cached"}
TINY = [f"--config.{k}={v}" for k, v in TINY_FIELDS.items()]


def set_fields(config, fields):
  """Sets {'dotted.field': value} on a ConfigDict."""
  for k, v in fields.items():
    node = config
    *path, last = k.split(".")
    for p in path:
      node = node[p]
    node[last] = v
  return config


def tiny_config(**overrides):
  """configs/resnet.py with TINY_FIELDS, 6 steps, then `overrides` ({'dotted.field': value})."""
  from configs import resnet
  fields = {**TINY_FIELDS, "num_train_steps": 6, "log_every_steps": 2, "eval_every_steps": 3,
            "checkpoint_every_steps": 3, **overrides}
  return set_fields(resnet.get_config(), fields)


def env(devices: int = 1, **extra):
  """The environment of an entry point run by a test: this checkout's code, `devices` CPU devices."""
  e = dict(os.environ)
  e["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  e["PYTHONPATH"] = ROOT
  e.update(extra)
  return e


def module_cmd(module, *args):
  return [sys.executable, "-m", module, *map(str, args)]


def run_module(module, *args, devices=1, timeout=600, extra_env=None, cwd=ROOT, **kw):
  """Runs `python -m module args...` as a user would; returns the CompletedProcess (text output)."""
  return subprocess.run(module_cmd(module, *args), cwd=cwd, env=env(devices, **(extra_env or {})),
                        capture_output=True, text=True, timeout=timeout, **kw)


def main_cmd(workdir, *overrides, config="configs/resnet.py"):
  return module_cmd("experiments.main", "--config", config, "--workdir", str(workdir), *TINY, *overrides)


def run_main(workdir, *overrides, devices=1, timeout=600, extra_env=None, **kw):
  """experiments.main on the tiny config in `workdir`."""
  return subprocess.run(main_cmd(workdir, *overrides), cwd=ROOT, env=env(devices, **(extra_env or {})),
                        capture_output=True, text=True, timeout=timeout, **kw)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def metrics(workdir, split="train"):
  """The metrics.jsonl entries of `split` in `workdir`."""
  from cnnjax.workdir import read_jsonl
  return [e for e in read_jsonl(os.path.join(str(workdir), "metrics.jsonl")) if e["split"] == split]


def train_entries(workdir):
  """(step, loss) of every train entry."""
  return [(e["step"], e["loss"]) for e in metrics(workdir, "train")]


def force_autotune_plan(directory, monkeypatch, plan):
  """Makes conv_impl='auto' run `plan` ({ConvSpec: path}) on CPU, read from a cache file in `directory` as a
  (fake) machine's decisions would be; the autotuner's state is restored after the test."""
  from cnnjax.layers import autotune
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


def random_variables(model, input_shape):
  """{'params': ..., 'batch_stats': ...} of `model` for inputs of `input_shape` (no batch axis), drawn here in
  numpy (seeded), not by the model's initialisers, whose compilation dominates a test that needs only a generic
  point: kernels He-normal over their fan-in, scales and variances near 1, biases, offsets and means near 0."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from cnnjax.models import init_variables
  rng = np.random.default_rng(0)

  def draw(path, leaf):
    if leaf.ndim >= 2:
      x = rng.normal(size=leaf.shape) * np.sqrt(2 / np.prod(leaf.shape[:-1]))
    else:
      x = (1.0 if jax.tree_util.keystr(path).endswith(("'scale']", "'var']")) else 0.0) + 0.1 * rng.normal(
          size=leaf.shape)
    return jnp.asarray(x, leaf.dtype)
  return {k: jax.tree_util.tree_map_with_path(draw, v)
          for k, v in init_variables(model, input_shape, abstract=True).items()}


def examples(n: int) -> int:
  """A Hypothesis test's example count: `n` under the `ci` profile, a fifth of it (at least 3) under `dev`."""
  from hypothesis import settings
  return n if settings.default.max_examples >= 100 else max(3, n // 5)
