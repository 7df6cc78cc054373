"""Scale-out: 8 devices compute what 1 does; two processes on 127.0.0.1 compute what one does; gradient
accumulation; bfloat16; the persistent compilation cache."""
import os
import re
import signal
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnnjax import checkpoint, models
from cnnjax.workdir import read_jsonl
from cnnjax.train import state as state_lib, steps
from tests import helpers

STEPS = ["--config.num_train_steps=4", "--config.checkpoint_every_steps=4", "--config.log_every_steps=2",
         "--config.eval_every_steps=4"]


def _assert_states_close(a, b, rtol=2e-5, atol=2e-6):
  """Two restored train states hold the same arrays: every part (params, batch_stats, opt_state with its momentum
  and count, step, rng), the same tree (no leaf missing on either side), each leaf close."""
  assert jax.tree.structure(a) == jax.tree.structure(b), (jax.tree.structure(a), jax.tree.structure(b))
  assert set(a) >= {"params", "batch_stats", "opt_state", "step", "rng"}, sorted(a)
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=rtol, atol=atol, err_msg=jax.tree_util.keystr(path))


@pytest.mark.slow
def test_eight_devices_equal_one_device(tmp_path):
  """Same global batch (32) with batch norm: data-parallel over 8 CPU devices matches 1 device."""
  for n in (1, 8):
    r = helpers.run_main(tmp_path / f"d{n}", *STEPS, devices=n)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"on {n} devices" in r.stderr
  a, _ = checkpoint.load_numpy(str(tmp_path / "d1"))
  b, _ = checkpoint.load_numpy(str(tmp_path / "d8"))
  _assert_states_close(a, b)
  ea, eb = (read_jsonl(str(tmp_path / d / "metrics.jsonl")) for d in ("d1", "d8"))
  assert [(e["step"], e["split"]) for e in ea] == [(e["step"], e["split"]) for e in eb] and len(ea) == 3
  for a, b in zip(ea, eb):
    for key in ("loss", "top1", "top5", "count", "learning_rate", "grad_norm"):
      if key in a:
        np.testing.assert_allclose(b[key], a[key], rtol=2e-5, err_msg=f"{a['split']} {key} at {a['step']}")


@pytest.mark.slow
def test_fsdp_sharded_params_equal_replicated(tmp_path):
  r = helpers.run_main(tmp_path / "rep", *STEPS, devices=4)
  assert r.returncode == 0, r.stderr[-3000:]
  assert re.search(r"0 of \d+ state arrays sharded", r.stderr)
  r = helpers.run_main(tmp_path / "fsdp", *STEPS, "--config.parallel.shard_params=True",
                       "--config.parallel.shard_min_size=256", devices=4)
  assert r.returncode == 0, r.stderr[-3000:]
  a, _ = checkpoint.load_numpy(str(tmp_path / "rep"))
  b, _ = checkpoint.load_numpy(str(tmp_path / "fsdp"))
  _assert_states_close(a, b)
  # Counted independently: every array of >= 256 elements with an axis that 4 divides is split.
  leaves = [x for x in jax.tree.leaves(b) if np.ndim(x) > 0]
  want = sum(1 for x in leaves if x.size >= 256 and any(d % 4 == 0 for d in x.shape))
  assert want >= 10, want
  got = re.search(r"(\d+) of \d+ state arrays sharded over 'data'", r.stderr)
  assert got and int(got.group(1)) == want, r.stderr[-2000:]


def _start_multihost(workdir, num_processes, extra=()):
  port = helpers.free_port()
  procs = []
  for i in range(num_processes):
    cmd = helpers.main_cmd(workdir, *STEPS, f"--config.distributed.coordinator_address=127.0.0.1:{port}",
                           "--config.distributed.num_processes=2", f"--config.distributed.process_id={i}", *extra)
    procs.append(subprocess.Popen(cmd, cwd=helpers.ROOT, env=helpers.env(2), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True))
  return procs


def _multihost(tmp_path, num_processes, timeout=240, extra=()):
  procs = _start_multihost(tmp_path / "mh", num_processes, extra)
  return [(p, *p.communicate(timeout=timeout)) for p in procs]


@pytest.mark.multiprocess
@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
  """2 processes x 2 CPU devices on 127.0.0.1 through the real entry point == 1 process x 4 devices; a resume
  with a damaged newest checkpoint: process 0 renames it before any process restores, both take the older."""
  every2 = ("--config.checkpoint_every_steps=2", "--config.keep_checkpoints=5")
  results = _multihost(tmp_path, 2, extra=every2)
  for p, out, err in results:
    assert p.returncode == 0, err[-3000:]
  fps = [re.search(r"process (\d): final parameters fingerprint (\w+)", err).groups() for _, _, err in results]
  assert {f[0] for f in fps} == {"0", "1"} and fps[0][1] == fps[1][1]  # both hold the same parameters
  assert "Done" in results[0][1] and "Done" not in results[1][1]      # only process 0 reports and writes
  r = helpers.run_main(tmp_path / "single", *STEPS, devices=4)
  assert r.returncode == 0, r.stderr[-3000:]
  a, _ = checkpoint.load_numpy(str(tmp_path / "single"))
  b, step = checkpoint.load_numpy(str(tmp_path / "mh"))
  assert step == 4
  _assert_states_close(a, b)
  # Resume with both processes (restore through Orbax by all of them) after step 4's files were emptied.
  ckpts = tmp_path / "mh" / "checkpoints"
  for f in (ckpts / "4" / "state").iterdir():
    if f.is_file():
      f.write_bytes(b"")
  results = _multihost(tmp_path, 2, extra=(*every2, "--config.num_train_steps=6"))
  for p, out, err in results:
    assert p.returncode == 0, err[-3000:]
    assert "restored checkpoint step 2" in err and "checkpoint step 4 cannot be restored" in err
  assert (ckpts / "4.damaged-0").is_dir() and not (ckpts / "4.damaged-1").exists()
  fps = [re.search(r"final parameters fingerprint (\w+)", err).group(1) for _, _, err in results]
  assert fps[0] == fps[1]


@pytest.mark.multiprocess
@pytest.mark.slow
def test_ctrl_c_on_one_of_two_processes_saves_and_both_exit_75(tmp_path):
  from cnnjax.train import loop
  work = tmp_path / "mh"
  procs = _start_multihost(work, 2, extra=("--config.num_train_steps=100000",
                                           "--config.checkpoint_every_steps=100000"))
  try:
    deadline = time.time() + 900  # two processes compile first: minutes on a loaded 2-core machine
    while time.time() < deadline and not (work / "metrics.jsonl").exists() and all(p.poll() is None for p in procs):
      time.sleep(0.2)
    assert (work / "metrics.jsonl").exists(), [p.communicate()[1][-2000:] for p in procs if p.poll() is not None]
    procs[1].send_signal(signal.SIGINT)  # a Ctrl-C on the non-chief process
    results = [(p, *p.communicate(timeout=300)) for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, out, err in results:
    assert p.returncode == loop.EXIT_PREEMPTED, err[-3000:]
  steps = [int(re.search(r"at step (\d+); checkpoint saved", err).group(1)) for _, _, err in results]
  assert steps[0] == steps[1] and checkpoint.Manager(str(work / "checkpoints")).all_steps() == [steps[0]]


@pytest.mark.multiprocess
@pytest.mark.slow
def test_missing_peer_ends_with_clear_message(tmp_path):
  port = helpers.free_port()
  cmd = helpers.main_cmd(tmp_path / "alone", *STEPS, f"--config.distributed.coordinator_address=127.0.0.1:{port}",
                         "--config.distributed.num_processes=2", "--config.distributed.process_id=0",
                         "--config.distributed.initialization_timeout=8")
  r = subprocess.run(cmd, cwd=helpers.ROOT, env=helpers.env(1), capture_output=True, text=True, timeout=120)
  assert r.returncode == 3
  assert "did not start within 8 s" in r.stderr and f"127.0.0.1:{port}" in r.stderr


def _tiny_model_state(norm, batch=16, seed=0):
  model = models.create("resnet20", num_classes=10, stage_sizes=(1, 1, 1), width=0.5, norm=norm)
  tx = optax.sgd(0.1, momentum=0.9)
  state = state_lib.create(jax.random.PRNGKey(seed), model, tx, (8, 8, 1))
  rng = np.random.default_rng(seed)
  batch = {"image": jnp.asarray(rng.normal(size=(batch, 8, 8, 1)), jnp.float32),
           "label": jnp.asarray(rng.integers(0, 10, batch), jnp.int32)}
  return model, tx, state, batch


@pytest.mark.slow
def test_grad_accumulation_equals_large_batch_without_batch_norm():
  model, tx, state, batch = _tiny_model_state("none")
  one = jax.jit(steps.make_train_step(model, tx, optax.constant_schedule(0.1)))
  acc = jax.jit(steps.make_train_step(model, tx, optax.constant_schedule(0.1), grad_accum_steps=4))
  s1, m1 = one(state, batch)
  s4, m4 = acc(state, batch)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), s1.params, s4.params)
  np.testing.assert_allclose(m1["loss"], m4["loss"], rtol=1e-5)
  np.testing.assert_allclose(m1["top1"], m4["top1"])


@pytest.mark.slow
def test_grad_accumulation_with_batch_norm_is_ghost_batch_norm():
  """With batch norm, microbatch j (examples j, j+k, ...) is normalised with its own statistics and the
  running averages are updated once per microbatch, in order: checked against an explicit loop."""
  k = 2
  model, tx, state, batch = _tiny_model_state("batch")
  acc = jax.jit(steps.make_train_step(model, tx, optax.constant_schedule(0.1), grad_accum_steps=k))
  got, _ = acc(state, batch)
  grads_sum, stats = None, state.batch_stats
  for j in range(k):
    im, lb = batch["image"][j::k], batch["label"][j::k]

    def loss_fn(p, stats=stats, im=im, lb=lb):
      out, new = model.apply({"params": p, "batch_stats": stats}, im, train=True, mutable=["batch_stats"])
      return jnp.mean(steps.cross_entropy(out, lb)), new["batch_stats"]
    (_, stats), g = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grads_sum = g if grads_sum is None else jax.tree.map(jnp.add, grads_sum, g)
  grads = jax.tree.map(lambda g: g / k, grads_sum)
  updates, _ = tx.update(grads, state.opt_state, state.params)
  want = optax.apply_updates(state.params, updates)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got.params, want)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got.batch_stats, stats)


@pytest.mark.slow
def test_bfloat16_trains_within_margin_of_float32(tmp_path):
  from cnnjax.train import loop
  from tests.helpers import tiny_config
  results = {}
  for dtype in ("float32", "bfloat16"):
    c = tiny_config(num_train_steps=120, eval_every_steps=120, checkpoint_every_steps=120, log_every_steps=40,
                    learning_rate=0.1, dtype=dtype, **{"dataset.image_size": 16})
    results[dtype] = loop.run(c, str(tmp_path / dtype))["eval"]["top1"]
  assert results["float32"] > 0.9, results
  assert results["bfloat16"] > results["float32"] - 0.03, results
  state, _ = checkpoint.load_numpy(str(tmp_path / "bfloat16"))
  assert all(x.dtype == np.float32 for x in jax.tree.leaves(state["params"]))       # float32 parameters
  assert all(x.dtype == np.float32 for x in jax.tree.leaves(state["batch_stats"]))  # float32 statistics
  # ... and the step really computes in bfloat16: its convolutions take and give bf16 (float32 ones do not).
  for dtype, want in (("bfloat16", True), ("float32", False)):
    assert _convs_in_bf16(tiny_config(dtype=dtype)) == want, dtype


def _convs_in_bf16(c) -> bool:
  from cnnjax import config as config_lib
  model = models.create(c.model.name, num_classes=10, **config_lib.model_options(c))
  tx = optax.sgd(0.1)
  st = state_lib.create(jax.random.PRNGKey(0), model, tx, (8, 8, 1))
  batch = {"image": jnp.zeros((4, 8, 8, 1)), "label": jnp.zeros((4,), jnp.int32)}
  hlo = jax.jit(steps.make_train_step(model, tx, optax.constant_schedule(0.1))).lower(st, batch).as_text()
  convs = [line for line in hlo.splitlines() if "convolution" in line]
  assert convs
  return all("bf16" in line for line in convs)


@pytest.mark.slow
def test_restart_reuses_compilation_cache(tmp_path):
  cache = tmp_path / "cache"
  args = (*STEPS, f"--config.compilation_cache_dir={cache}")
  r = helpers.run_main(tmp_path / "a", *args)
  assert r.returncode == 0, r.stderr[-2000:]
  first = set(os.listdir(cache))
  assert first, "nothing was cached"
  # A fresh process, a fresh workdir: the step programs are read from the cache (JAX logs each hit with
  # JAX_LOG_COMPILES), and nothing new is written.
  r = helpers.run_main(tmp_path / "b", *args, extra_env={"JAX_LOG_COMPILES": "1"})
  assert r.returncode == 0, r.stderr[-2000:]
  for name in ("jit_train_step", "jit_eval_step"):
    assert f"Persistent compilation cache hit for '{name}'" in r.stderr, r.stderr[-3000:]
  assert set(os.listdir(cache)) == first
