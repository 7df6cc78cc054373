"""Helpers for tests that run the real entry point in subprocesses."""
import os
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(__import__("tempfile").gettempdir(), "cnnjax-test-jax-cache")

# The tiny run every test starts from: ResNet-8 at half width on 8x8 digits, a few seconds on 2 CPU cores.
# conftest.tiny_config applies it to configs/resnet.py in process; TINY gives it as command-line overrides.
TINY_FIELDS = {"model.width": 0.5, "model.stage_sizes": (1, 1, 1), "dataset.image_size": 8,
               "dataset.augment": "none", "batch_size": 32, "eval_batch_size": 64, "learning_rate": 0.05,
               "progress_bar": False, "compilation_cache_dir": CACHE, "model.conv_autotune": "cached"}
TINY = [f"--config.{k}={v}" for k, v in TINY_FIELDS.items()]


def env(devices: int = 1, **extra):
  e = dict(os.environ)
  e["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  e["PYTHONPATH"] = ROOT
  e.update(extra)
  return e


def main_cmd(workdir, *overrides, config="configs/resnet.py"):
  return [sys.executable, "-m", "experiments.main", "--config", config, "--workdir", str(workdir), *TINY,
          *overrides]


def run_main(workdir, *overrides, devices=1, timeout=600, extra_env=None, **kw):
  return subprocess.run(main_cmd(workdir, *overrides), cwd=ROOT, env=env(devices, **(extra_env or {})),
                        capture_output=True, text=True, timeout=timeout, **kw)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]
