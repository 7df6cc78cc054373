"""Tests that need a real GPU: bfloat16 compute, buffer donation, the transfer guard and a kill-and-resume on the
device. Skipped elsewhere with the reason; `pytest -m gpu` on a GPU machine (benchmarks/device_check.py runs them)."""
import signal
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax import checkpoint, models
from cnnjax import config as config_lib
from cnnjax.train import loop, optim, state as state_lib, steps
from tests import helpers
from tests.helpers import tiny_config

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(jax.default_backend() != "gpu",
                                 reason=f"needs a GPU; JAX's backend here is {jax.default_backend()!r}")]


def _step_and_batch(dtype):
  c = tiny_config(dtype=dtype)
  model = models.create(c.model.name, num_classes=10, **config_lib.model_options(c))
  tx, schedule = optim.build(c, 10, 10)
  state = state_lib.create(jax.random.PRNGKey(0), model, tx, (8, 8, 1))
  rng = np.random.default_rng(0)
  batch = {"image": jnp.asarray(rng.normal(size=(32, 8, 8, 1)), jnp.float32),
           "label": jnp.asarray(rng.integers(0, 10, 32), jnp.int32)}
  return jax.jit(steps.make_train_step(model, tx, schedule), donate_argnums=0), state, batch


def test_bfloat16_step_runs_bf16_convolutions_and_matches_float32():
  """config.dtype='bfloat16' on the GPU: the compiled step's convolutions take bf16 operands, the parameters stay
  float32, and the loss is the float32 step's within bfloat16's precision (8 bits: 2%). Catches a dtype that
  never reaches the layers (same HLO as float32) or a bf16 path that computes something else."""
  f32, s32, batch = _step_and_batch("float32")
  bf16, s16, _ = _step_and_batch("bfloat16")
  hlo = bf16.lower(s16, batch).compile().as_text()
  assert "bf16" in hlo and "convolution" in hlo
  _, m32 = f32(s32, batch)
  new16, m16 = bf16(s16, batch)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(new16.params))
  np.testing.assert_allclose(float(m16["loss"]), float(m32["loss"]), rtol=2e-2)


def test_donated_state_buffers_are_deleted_on_the_gpu():
  """The loop donates the train state: on the GPU its buffers are reused by the new state, so the old arrays are
  deleted (twice the state's memory otherwise). Catches a step compiled without donation."""
  step, state, batch = _step_and_batch("float32")
  leaves = jax.tree.leaves(state.params)
  step(state, batch)
  assert all(x.is_deleted() for x in leaves)


def test_loop_runs_under_the_transfer_guard_on_the_gpu(tmp_path):
  """A short run on the GPU: every train and eval step runs under transfer_guard('disallow'), so any implicit
  host-device copy in a step (a numpy constant, a Python scalar turned into an array) raises here."""
  last = loop.run(tiny_config(num_train_steps=4), str(tmp_path))
  assert np.isfinite(last["eval"]["loss"])
  assert jax.devices()[0].platform == "gpu"


def test_kill_and_resume_on_the_gpu_is_bit_exact(tmp_path):
  """SIGKILL a GPU run after its first checkpoint, rerun the command: the final state equals a straight run's bit
  for bit. Catches nondeterministic GPU kernels (autotuned convolution algorithms, atomics) breaking resume."""
  over = ["--config.num_train_steps=12", "--config.checkpoint_every_steps=4", "--config.log_every_steps=2",
          "--config.eval_every_steps=12"]
  r = helpers.run_main(tmp_path / "ref", *over)
  assert r.returncode == 0, r.stderr[-3000:]
  work = tmp_path / "killed"
  p = subprocess.Popen(helpers.main_cmd(work, *over), cwd=helpers.ROOT, env=helpers.env(1),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  end = time.time() + 240
  while time.time() < end and p.poll() is None and not checkpoint.Manager(str(work / "checkpoints")).all_steps():
    time.sleep(0.05)
  killed = p.poll() is None
  if killed:
    p.send_signal(signal.SIGKILL)
  p.wait()
  assert killed, "the run ended before it could be killed"
  r = helpers.run_main(work, *over)
  assert r.returncode == 0, r.stderr[-3000:]
  a, step_a = checkpoint.load_numpy(str(tmp_path / "ref"))
  b, step_b = checkpoint.load_numpy(str(work))
  assert step_a == step_b == 12
  jax.tree.map(np.testing.assert_array_equal, a, b)
