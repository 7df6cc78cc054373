"""Shared fixtures and settings: the project's CPU XLA flags, no convolution autotuning, Hypothesis profiles, a
tiny config, and finished runs that several tests read (session-scoped; copy one before changing it)."""
import fcntl
import os
import shutil
import tempfile

import pytest
from hypothesis import settings

from cnnjax.layers import autotune, cpu_fast
from configs import default
from tests import helpers

cpu_fast.set_xla_flags()  # the project's CPU XLA flags, as the entry points set them, before jax starts

# Tests never measure convolutions ('auto' runs what a cache holds, lax otherwise): every config built in this
# process says conv_autotune='cached' (the subprocess runs get it from helpers.TINY_FIELDS), and code that
# traces models outside a run reads an empty cache, not the user's.
_default_config = default.get_config


def _tests_config():
  c = _default_config()
  c.model.conv_autotune = "cached"
  return c


default.get_config = _tests_config
autotune.configure("cached", tempfile.mkdtemp(prefix="cnnjax-test-autotune-"))

# `dev`: few examples, for daily work; `ci`: Hypothesis' defaults (100 examples). .ci/run passes
# --hypothesis-profile=ci; without it, `ci` where the CI variable is set, else `dev`.
settings.register_profile("ci", settings())
settings.register_profile("dev", max_examples=10)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(autouse=True)
def _multiprocess_tests_take_turns(request, tmp_path_factory):
  """Under pytest-xdist (.ci/run runs the slow tier on two workers) the multi-process tests take turns: two side
  by side were four JAX processes on two cores, and their peers timed out. The lock file lies in this run's
  temporary directory, which its workers share; a run without workers takes no lock."""
  if "PYTEST_XDIST_WORKER" not in os.environ or not request.node.get_closest_marker("multiprocess"):
    yield
    return
  with open(tmp_path_factory.getbasetemp().parent / "multiprocess.lock", "w") as f:
    fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes
    yield


@pytest.fixture
def make_config():
  return helpers.tiny_config


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
  """A finished tiny run (6 steps, checkpoints at 3 and 6, eval at 3 and 6) and its config: read, don't change
  (copy it with `copy_run`)."""
  from cnnjax.train import loop
  c = helpers.tiny_config()
  workdir = tmp_path_factory.mktemp("finished") / "run"
  loop.run(c, str(workdir))
  return c, workdir


@pytest.fixture
def copy_run(tmp_path):
  """copy_run(src) -> a copy of the run directory `src` in this test's tmp_path."""
  def copy(src, name="run"):
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst
  return copy
