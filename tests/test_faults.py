"""Faults a long run meets, each tried for real: kills, preemption signals, non-finite losses, damaged
checkpoints, torn metrics, a config changed under a workdir, invalid values. docs/guide/faults.md lists them."""
import errno
import glob
import importlib.util
import json
import logging
import os
import random
import re
import shutil
import signal
import subprocess
import time

import jax
import numpy as np
import pytest

from cnnjax.workdir import read_jsonl
from cnnjax import checkpoint
from cnnjax.errors import ConfigError
from cnnjax.train import loop
from tests import helpers
from tests.helpers import tiny_config

LONG = ["--config.num_train_steps=40", "--config.checkpoint_every_steps=4", "--config.log_every_steps=2",
        "--config.eval_every_steps=20", "--config.dataset.image_size=16", "--config.dataset.augment=pad_crop"]


def _assert_same_run(a, b, split_window_at=None):
  """Same final state bit for bit, same eval history, and the same train history; with `split_window_at=s`
  (a preemption at step s) the log window around s is written as two shorter ones, so only the entries
  outside that window are compared."""
  sa, step_a = checkpoint.load_numpy(str(a))
  sb, step_b = checkpoint.load_numpy(str(b))
  assert step_a == step_b
  jax.tree.map(np.testing.assert_array_equal, sa, sb)   # bit for bit
  ta, tb = helpers.train_entries(a), helpers.train_entries(b)
  steps_b = [s for s, _ in tb]
  assert steps_b == sorted(set(steps_b))                 # each step once, in order
  if split_window_at is None:
    assert tb == ta
  else:
    window = lambda s: abs(s - split_window_at) < 2      # LONG logs every 2 steps
    assert [e for e in tb if not window(e[0])] == [e for e in ta if not window(e[0])]
  ev = lambda w: [(e["step"], e["top1"]) for e in read_jsonl(os.path.join(w, "metrics.jsonl"))
                  if e["split"] == "eval"]
  assert ev(b) == ev(a)


def _wait_for(pred, proc, timeout=120.0, poll=0.005):
  end = time.time() + timeout
  while time.time() < end and proc.poll() is None:
    if pred():
      return True
    time.sleep(poll)
  return False


@pytest.fixture(scope="module")
def long_ref(tmp_path_factory):
  """LONG trained straight through by the entry point, once: the run the interrupted ones must equal (read only)."""
  ref = tmp_path_factory.mktemp("long") / "ref"
  r = helpers.run_main(ref, *LONG)
  assert r.returncode == 0, r.stderr[-3000:]
  return ref


@pytest.mark.subprocess
@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_is_bit_exact(tmp_path, long_ref):
  work = tmp_path / "killed"
  rng = random.Random(0)
  ckpts = str(work / "checkpoints")
  # Kill points: while an async checkpoint save is in flight (its tmp dir exists), after a random logged
  # step, and at a random time after start (often during start-up or compilation).
  plan = ["during_save", "after_step", "random_time", "during_save", "after_step"]
  kills = []
  for how in plan:
    p = subprocess.Popen(helpers.main_cmd(work, *LONG), cwd=helpers.ROOT, env=helpers.env(1),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    start_steps = {s for s, _ in helpers.train_entries(work)}
    if how == "during_save":
      hit = _wait_for(lambda: glob.glob(os.path.join(ckpts, "*orbax-checkpoint-tmp*")), p)
    elif how == "after_step":
      target = rng.randint(1, 10)
      hit = _wait_for(lambda: len({s for s, _ in helpers.train_entries(work)} - start_steps) >= target, p)
    else:
      hit = _wait_for(lambda: False, p, timeout=rng.uniform(1.0, 8.0))
    if p.poll() is None:
      p.send_signal(signal.SIGKILL)
      kills.append((how, bool(hit)))
    p.wait()
  assert any(how == "during_save" and hit for how, hit in kills), kills
  r = helpers.run_main(work, *LONG)  # the same command, once more: it finishes the run
  assert r.returncode == 0, r.stderr[-3000:]
  _assert_same_run(long_ref, work)
  assert not glob.glob(os.path.join(ckpts, "*damaged*"))  # kills never damage a finalized checkpoint


@pytest.mark.subprocess
@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_preemption_signal_saves_and_exits_then_resumes(tmp_path, long_ref, signum):
  work = tmp_path / "pre"
  p = subprocess.Popen(helpers.main_cmd(work, *LONG), cwd=helpers.ROOT, env=helpers.env(1),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  assert _wait_for(lambda: any(s >= 6 for s, _ in helpers.train_entries(work)), p)
  p.send_signal(signum)
  out, err = p.communicate(timeout=120)
  assert p.returncode == loop.EXIT_PREEMPTED, err[-3000:]
  saved = checkpoint.Manager(str(work / "checkpoints")).latest_step()
  assert f"at step {saved}" in err and saved >= 6
  assert max(s for s, _ in helpers.train_entries(work)) == saved  # metrics flushed up to the saved step
  r = helpers.run_main(work, *LONG)
  assert r.returncode == 0, r.stderr[-3000:]
  _assert_same_run(long_ref, work, split_window_at=saved)


@pytest.mark.slow
def test_nonfinite_stop_keeps_last_good_checkpoint(tmp_path):
  c = tiny_config(num_train_steps=8, learning_rate=1e30, checkpoint_every_steps=1, log_every_steps=4,
                  on_nonfinite="stop", lr_schedule="constant", **{"model.norm": "none"})
  with pytest.raises(loop.NonFiniteError, match=r"non-finite loss and grads at step 2"):
    loop.run(c, str(tmp_path))
  state, step = checkpoint.load_numpy(str(tmp_path))
  assert step == 1
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state))


@pytest.mark.slow
def test_nonfinite_skip_counts_and_stops_after_too_many(tmp_path):
  """With a rate of 1e30 step 1 is finite and every later step is not (the weights overflow float32): each is
  skipped, so the checkpoints of steps 2, 4, 6 and 8 hold one and the same state, the one after step 1, bit for
  bit in every part a step writes (parameters, batch-norm statistics, optimizer state, RNG), finite, with the
  step counter going on."""
  c = tiny_config(num_train_steps=8, learning_rate=1e30, checkpoint_every_steps=2, log_every_steps=2,
                  eval_every_steps=8, on_nonfinite="skip", max_consecutive_nonfinite=20, lr_schedule="constant",
                  keep_checkpoints=5)
  loop.run(c, str(tmp_path / "skip"))
  entries = [e for e in read_jsonl(str(tmp_path / "skip" / "metrics.jsonl")) if e["split"] == "train"]
  assert [e["nonfinite_steps"] for e in entries] == [1, 2, 2, 2]  # steps 2..8 skipped
  steps = checkpoint.Manager(str(tmp_path / "skip" / "checkpoints")).all_steps()
  assert steps == [2, 4, 6, 8]
  first, _ = checkpoint.load_numpy(str(tmp_path / "skip"), 2)
  first.pop("step")
  assert jax.tree.leaves(first["batch_stats"]) and jax.tree.leaves(first["opt_state"])
  for step in steps:
    state, _ = checkpoint.load_numpy(str(tmp_path / "skip"), step)
    assert int(state.pop("step")) == step
    assert jax.tree.structure(state) == jax.tree.structure(first)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(state), jax.tree.leaves(first)):
      np.testing.assert_array_equal(a, b, err_msg=f"step {step}: {jax.tree_util.keystr(path)}")
      assert np.isfinite(a).all(), f"step {step}: {jax.tree_util.keystr(path)}"  # NaN equals NaN above
  c.max_consecutive_nonfinite = 3
  with pytest.raises(loop.NonFiniteError, match=r"step 4 .*3 non-finite steps in a row"):
    loop.run(c, str(tmp_path / "limit"))


@pytest.fixture(scope="module")
def six_and_eight(tmp_path_factory):
  """A run stopped at step 6 (checkpoints 2, 4, 6) and the same run trained straight to step 8 (the reference a
  resume from step 4 must equal)."""
  c = tiny_config(num_train_steps=8, checkpoint_every_steps=2, log_every_steps=2, lr_schedule="constant",
                  keep_checkpoints=5)
  root = tmp_path_factory.mktemp("damage")
  loop.run(c, str(root / "six"), stop_after_steps=6)
  loop.run(c, str(root / "ref"))
  return c, root / "six", root / "ref"


def _largest_array_file(step_dir):
  files = [f for f in glob.glob(str(step_dir / "state" / "**" / "d" / "*"), recursive=True) if os.path.isfile(f)]
  return max(files, key=os.path.getsize)


def _truncate(f):
  with open(f, "r+b") as fh:
    fh.truncate(os.path.getsize(f) // 2)


def _zero_fill(f):
  with open(f, "r+b") as fh:
    fh.write(bytes(os.path.getsize(f)))


def _flip_bit(f):
  with open(f, "r+b") as fh:
    fh.seek(os.path.getsize(f) // 2)
    b = fh.read(1)[0]
    fh.seek(-1, os.SEEK_CUR)
    fh.write(bytes([b ^ 0x10]))


# Each way a finalized step's files get damaged (on a disk, a bucket, by a copy), applied to step 6.
DAMAGE = {
    "array_file_truncated": lambda d: _truncate(_largest_array_file(d)),
    "array_file_deleted": lambda d: os.remove(_largest_array_file(d)),
    "array_file_zero_filled": lambda d: _zero_fill(_largest_array_file(d)),
    "array_file_bit_flipped": lambda d: _flip_bit(_largest_array_file(d)),
    "manifest_missing": lambda d: os.remove(d / "state" / "manifest.ocdbt"),
    "state_missing": lambda d: shutil.rmtree(d / "state"),
    "every_file_emptied": lambda d: [open(f, "w").close() for f in glob.glob(str(d / "state" / "**" / "*"),
                                                                             recursive=True) if os.path.isfile(f)],
    # Written by an older version, or killed between finalizing and sealing: no files.json to compare with.
    "unsealed_array_file_truncated": lambda d: (os.remove(d / checkpoint.SEAL), _truncate(_largest_array_file(d))),
    "unsealed_manifest_missing": lambda d: (os.remove(d / checkpoint.SEAL), os.remove(d / "state" / "manifest.ocdbt")),
}


@pytest.mark.parametrize("how", [h if h in ("array_file_truncated", "unsealed_array_file_truncated") else
                                 pytest.param(h, marks=pytest.mark.slow) for h in DAMAGE])  # fast tier: two
def test_damaged_checkpoint_is_moved_aside_and_the_run_resumes_from_the_next_older(six_and_eight, copy_run, how,
                                                                                    caplog):
  caplog.set_level(logging.INFO, logger="cnnjax")
  c, six, ref = six_and_eight
  work = copy_run(six)
  ckpts = work / "checkpoints"
  DAMAGE[how](ckpts / "6")
  loop.run(c, str(work))
  assert "checkpoint step 6 cannot be restored" in caplog.text
  assert os.path.isdir(ckpts / "6.damaged-0")                       # kept, not deleted
  assert "restored checkpoint step 4" in caplog.text
  assert checkpoint.Manager(str(ckpts)).all_steps() == [2, 4, 6, 8]  # resumed from 4, saved 6 and 8 anew
  a, _ = checkpoint.load_numpy(str(ref))
  b, _ = checkpoint.load_numpy(str(work))
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_empty_step_and_leftover_temporary_directories(six_and_eight, copy_run, caplog):
  """An empty step directory is damage (moved aside); Orbax's leftover temporary directory is not a step."""
  caplog.set_level(logging.INFO, logger="cnnjax")
  c, six, ref = six_and_eight
  work = copy_run(six)
  ckpts = work / "checkpoints"
  os.makedirs(ckpts / "7")
  os.makedirs(ckpts / "10.orbax-checkpoint-tmp-1234" / "state")
  loop.run(c, str(work))
  assert "checkpoint step 7 cannot be restored (empty step directory)" in caplog.text
  assert os.path.isdir(ckpts / "7.damaged-0") and "restored checkpoint step 6" in caplog.text
  a, _ = checkpoint.load_numpy(str(ref))
  b, _ = checkpoint.load_numpy(str(work))
  jax.tree.map(np.testing.assert_array_equal, a, b)


@pytest.mark.slow
def test_incompatible_checkpoint_names_the_parameters(tmp_path):
  loop.run(tiny_config(num_train_steps=2), str(tmp_path))
  with pytest.raises(ConfigError, match=r"does not fit this model: .*of another shape: params/head/kernel "
                                        r"checkpoint \(32, 10\) vs model \(16, 10\)"):
    loop.run(tiny_config(num_train_steps=2, **{"model.width": 0.25}), str(tmp_path), allow_config_change=True)


@pytest.mark.slow
def test_changed_config_refused_unless_allowed_safe_changes_pass(tmp_path):
  loop.run(tiny_config(num_train_steps=2), str(tmp_path))
  with pytest.raises(ConfigError, match=r"learning_rate: 0.05 in the workdir, 0.3 now"):
    loop.run(tiny_config(num_train_steps=2, learning_rate=0.3), str(tmp_path))
  loop.run(tiny_config(num_train_steps=4, log_every_steps=1), str(tmp_path))  # safe: cadence and length
  loop.run(tiny_config(num_train_steps=5, learning_rate=0.3), str(tmp_path), allow_config_change=True)
  assert checkpoint.Manager(str(tmp_path / "checkpoints")).latest_step() == 5


@pytest.mark.slow
def test_torn_metrics_line_is_skipped_and_dropped_on_resume(tmp_path):
  c = tiny_config(num_train_steps=4, log_every_steps=2, checkpoint_every_steps=2, eval_every_steps=4)
  loop.run(c, str(tmp_path), stop_after_steps=2)
  path = tmp_path / "metrics.jsonl"
  with open(path, "a") as f:
    f.write('{"step": 3, "split": "train", "lo')  # a crash in the middle of a write
  assert [e["step"] for e in read_jsonl(str(path))] == [2]
  loop.run(c, str(tmp_path))
  lines = path.read_text().splitlines()
  assert all(line.endswith("}") for line in lines)
  assert [e["step"] for e in read_jsonl(str(path)) if e["split"] == "train"] == [2, 4]


@pytest.mark.parametrize("override, message", [
    ({"learning_rate": 0.0}, r"config.learning_rate=0.0 is invalid: > 0"),
    ({"batch_size": 30, "grad_accum_steps": 4}, r"config.batch_size=30 is invalid: a multiple of"),
    ({"dataset.num_classes": 100}, r"dataset.num_classes=100 but digits has 10 classes"),
    ({"optimizer": "adam"}, r"config.optimizer='adam' is invalid: one of \('sgd', 'adamw', 'adadelta'\)"),
    ({"model.norm": "batchnorm"}, r"config.model.norm='batchnorm' is invalid: one of \('batch', 'group'"),
    ({"model.name": "resnet21"}, r"unknown model 'resnet21'.*resnet20"),
    ({"model.shortcut": "Z"}, r"config.model.shortcut='Z' is invalid: one of \('A', 'B'"),
    ({"dataset.name": "cifar11"}, r"unknown data set dataset.name='cifar11'"),
    ({"model.name": "lenet5", "model.width": None, "model.stage_sizes": None, "model.residual": None,
      "model.norm": None, "model.shortcut": None, "model.zero_init_residual": None},
     r"config.dataset.image_size=8 is too small for model 'lenet5'"),
])
def test_invalid_values_fail_before_compiling(tmp_path, override, message):
  with pytest.raises((ConfigError, ValueError), match=message) as e:
    loop.run(tiny_config(**override), str(tmp_path / "w"))
  assert not os.path.exists(tmp_path / "w")  # nothing written, not even the workdir
  if "image_size" not in message:
    assert "image_size" not in str(e.value)  # only a genuinely too-small input blames the image size


@pytest.mark.slow
def test_changed_worker_count_resumes_at_the_saved_step(tmp_path, caplog):
  """Worker counts may change on resume: the run goes on from its checkpoint (nothing renamed, no restart) and
  ends where an uninterrupted run with the same data ends."""
  caplog.set_level(logging.INFO, logger="cnnjax")
  c = tiny_config(num_train_steps=6, checkpoint_every_steps=3, log_every_steps=3,
                  **{"dataset.augment": "pad_crop_flip"})
  loop.run(c, str(tmp_path / "straight"))
  loop.run(c, str(tmp_path / "w"), stop_after_steps=3)
  c.dataset.num_workers = 2
  loop.run(c, str(tmp_path / "w"))
  assert "restored checkpoint step 3" in caplog.text
  assert not glob.glob(str(tmp_path / "w" / "checkpoints" / "*damaged*"))
  a, _ = checkpoint.load_numpy(str(tmp_path / "straight"))
  b, _ = checkpoint.load_numpy(str(tmp_path / "w"))
  jax.tree.map(np.testing.assert_array_equal, a, b)
  assert helpers.train_entries(tmp_path / "w") == helpers.train_entries(tmp_path / "straight")


@pytest.mark.parametrize("error", [
    PermissionError(13, "Permission denied"), OSError(errno.EIO, "Input/output error"),
    ConnectionResetError(104, "Connection reset by peer"), TimeoutError(110, "Connection timed out")],
    ids=["permission", "io", "connection_reset", "timeout"])
@pytest.mark.parametrize("sealed", [True, False], ids=["sealed", "unsealed"])
def test_read_error_that_is_not_damage_stops_and_renames_nothing(six_and_eight, copy_run, monkeypatch, error,
                                                                 sealed):
  c, six, _ = six_and_eight
  work = copy_run(six)
  if not sealed:  # an older version's step: no seal, so the error's kind alone decides
    os.remove(work / "checkpoints" / "6" / checkpoint.SEAL)
  before = sorted(os.listdir(work / "checkpoints"))
  lines = (work / "metrics.jsonl").read_text()
  import orbax.checkpoint as ocp

  def refuse(self, step, args=None):
    raise error
  monkeypatch.setattr(ocp.CheckpointManager, "restore", refuse)
  with pytest.raises(checkpoint.RestoreError, match=rf"checkpoint step 6 in .* could not be read: "
                                                    rf"{type(error).__name__}.*nothing was moved"):
    loop.run(c, str(work))
  assert sorted(os.listdir(work / "checkpoints")) == before
  assert (work / "metrics.jsonl").read_text() == lines


@pytest.mark.slow
def test_paths_may_change_on_resume(finished_run, copy_run, caplog):
  """The data folder, the compilation cache and the worker count are where a run is, not what it is: a resume
  with other values is no config change and goes on from the checkpoint."""
  caplog.set_level(logging.INFO, logger="cnnjax")
  c, done = finished_run
  work = copy_run(done)
  c = c.copy_and_resolve_references()
  c.num_train_steps = 8
  c.dataset.data_dir = str(work / "elsewhere")
  c.compilation_cache_dir = str(work / "other-cache")
  c.dataset.num_workers = 1
  loop.run(c, str(work))
  assert "restored checkpoint step 6" in caplog.text and "changed config" not in caplog.text
  assert checkpoint.Manager(str(work / "checkpoints")).latest_step() == 8


def test_second_ctrl_c_stops_at_once():
  """The first SIGINT is recorded (the loop saves, then exits 75); a second one raises KeyboardInterrupt at once;
  the previous handlers are back afterwards."""
  before = signal.getsignal(signal.SIGINT)
  with loop._SignalFlag() as sig:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.01)
    assert sig.signum == signal.SIGINT
    with pytest.raises(KeyboardInterrupt):
      os.kill(os.getpid(), signal.SIGINT)
      time.sleep(1)
  assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.slow
def test_all_checkpoints_damaged_needs_restart_which_keeps_the_old_attempt(tmp_path):
  c = tiny_config(num_train_steps=2, checkpoint_every_steps=2)
  loop.run(c, str(tmp_path))
  for f in glob.glob(str(tmp_path / "checkpoints" / "2" / "state" / "*")):
    if os.path.isfile(f):
      open(f, "w").close()
  old_metrics = (tmp_path / "metrics.jsonl").read_text()
  c.num_train_steps = 4
  with pytest.raises(ConfigError, match=r"no checkpoint in .* could be restored.*Pass --restart"):
    loop.run(c, str(tmp_path))
  assert (tmp_path / "metrics.jsonl").read_text() == old_metrics  # nothing truncated
  loop.run(c, str(tmp_path), restart=True)
  assert (tmp_path / "previous" / "0" / "metrics.jsonl").read_text() == old_metrics
  assert os.path.isdir(tmp_path / "previous" / "0" / "checkpoints" / "2.damaged-0")
  assert checkpoint.Manager(str(tmp_path / "checkpoints")).all_steps() == [2, 4]  # trained anew from 0


@pytest.mark.subprocess
@pytest.mark.slow
def test_second_launch_on_a_busy_workdir_exits_naming_the_holder(tmp_path):
  work, endless = tmp_path / "w", (*LONG, "--config.num_train_steps=100000")
  popen = lambda: subprocess.Popen(helpers.main_cmd(work, *endless), cwd=helpers.ROOT, env=helpers.env(1),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  first = popen()
  try:
    assert _wait_for(lambda: helpers.train_entries(work), first, timeout=300)
    second = helpers.run_main(work, *endless, timeout=300)
    assert second.returncode == 4, second.stderr[-2000:]
    assert f"in use by pid {first.pid} on " in second.stderr
    assert first.poll() is None  # the first run goes on, untouched
    first.send_signal(signal.SIGKILL)
    first.wait()
    third = popen()  # the holder is dead: its lock is taken over, with a warning, and the run resumes
    lines = []
    for line in third.stderr:
      lines.append(line)
      if "starting at step" in line:
        break
    third.kill()
    third.wait()
    text = "".join(lines)
    assert f"took over the lock of {work}, left by pid {first.pid}" in text, text[-2000:]
  finally:
    first.kill()


@pytest.mark.slow
def test_rerun_at_the_last_step_writes_missing_final_metrics(tmp_path):
  """A run killed after its last checkpoint but before final_metrics.json (same files as deleting it) writes
  it on the rerun, from the logged metrics, and evaluates anew if the last eval was never logged."""
  c = tiny_config(num_train_steps=4, checkpoint_every_steps=4, eval_every_steps=4, log_every_steps=2)
  loop.run(c, str(tmp_path))
  final = json.loads((tmp_path / loop.FINAL).read_text())
  os.remove(tmp_path / loop.FINAL)
  loop.run(c, str(tmp_path))
  assert json.loads((tmp_path / loop.FINAL).read_text()) == final
  os.remove(tmp_path / loop.FINAL)
  path = tmp_path / "metrics.jsonl"
  path.write_text("".join(line + "\n" for line in path.read_text().splitlines() if '"eval"' not in line))
  loop.run(c, str(tmp_path))
  again = json.loads((tmp_path / loop.FINAL).read_text())
  assert again["step"] == 4 and again["eval"]["top1"] == final["eval"]["top1"]
  assert [e["step"] for e in read_jsonl(str(path)) if e["split"] == "eval"] == [4]


def test_restart_moves_every_file_an_attempt_wrote(tmp_path):
  """Every name an attempt can write is moved to previous/<n>/ (the lock and earlier attempts stay), with its
  contents; a second restart goes to previous/1/."""
  from cnnjax import workdir as workdir_lib
  written = ["config.json", "metrics.jsonl", "final_metrics.json", "checkpoints", "tensorboard", "eval",
             "conv_impls.json", "preprocessing.json", "class_names.json", "vocab.json"]  # by the runs, by hand
  work = tmp_path / "w"
  (work / "previous" / "0").mkdir(parents=True)
  (work / "lock.json").write_text("")
  for name in written:
    if name.endswith((".json", ".jsonl")):
      (work / name).write_text(f'"{name}"')
    else:
      (work / name / "inner").mkdir(parents=True)
  assert workdir_lib.move_aside(str(work)) == work / "previous" / "1"
  assert sorted(os.listdir(work)) == ["lock.json", "previous"]
  moved = work / "previous" / "1"
  assert sorted(os.listdir(moved)) == sorted(written)
  assert (moved / "vocab.json").read_text() == '"vocab.json"' and (moved / "checkpoints" / "inner").is_dir()


def test_a_run_writes_only_files_restart_knows(finished_run, tmp_path):
  """What a finished run (and an evaluation of it) leaves in its workdir is all in workdir.ATTEMPT, so
  --restart moves all of it: a new file must be added there."""
  from cnnjax import workdir as workdir_lib
  c, work = finished_run
  work = shutil.copytree(work, tmp_path / "w")
  loop.evaluate_checkpoint(c, str(work))
  assert set(os.listdir(work)) <= set(workdir_lib.ATTEMPT) | {workdir_lib.LOCK}
  assert {"config.json", "metrics.jsonl", "final_metrics.json", "checkpoints", "tensorboard", "eval",
          "conv_impls.json"} <= set(os.listdir(work))


def _bad_workdirs(tmp_path):
  (tmp_path / "a_file").write_text("x")
  cases = {"existing_file": (tmp_path / "a_file", r"is an existing file, not a folder"),
           "inside_a_file": (tmp_path / "a_file" / "run", r"lies inside the file .*a_file, not a folder"),
           "cannot_be_created": ("/proc/nope/run", r"cannot be created: .*\(/proc/nope\)")}
  if importlib.util.find_spec("s3fs") is None:
    cases["bucket_without_its_package"] = ("s3://bucket/run", r"s3:// needs a package .*Fix: pip install s3fs")
  return cases


@pytest.mark.parametrize("case", ["existing_file", "inside_a_file", "cannot_be_created",
                                  "bucket_without_its_package"])
def test_unusable_workdir_is_a_config_error_naming_it_and_the_fix(tmp_path, case):
  cases = _bad_workdirs(tmp_path)
  if case not in cases:
    pytest.skip("s3fs is installed here")
  workdir, message = cases[case]
  with pytest.raises(ConfigError, match=r"--workdir " + re.escape(str(workdir)) + ".*" + message):
    loop.run(tiny_config(), str(workdir))
  eval_message = r"no checkpoint to evaluate in /proc/nope/run" if case == "cannot_be_created" else message
  with pytest.raises(ConfigError, match=eval_message):  # evaluation-only runs check it too, creating nothing
    loop.evaluate_checkpoint(tiny_config(), str(workdir))
  assert (tmp_path / "a_file").read_text() == "x"


OLD_WORKDIR = os.path.join(helpers.ROOT, "tests", "data", "workdir_c930307")


def test_a_workdir_written_by_an_earlier_version_resumes(finished_run, copy_run):
  """A workdir stopped at step 3 by an earlier version (tests/data/README.md) resumes under today's code: it keeps
  its first three steps' records and ends where a straight run of today's code ends (within float noise: the
  stored steps may have run on another CPU; a lost optimizer state or a restart from step 0 is far outside it)."""
  c, straight = finished_run
  old = copy_run(OLD_WORKDIR)
  records = lambda w: [e for e in read_jsonl(os.path.join(w, "metrics.jsonl")) if e["step"] <= 3]
  before = records(old)
  loop.run(c, str(old))
  sa, step_a = checkpoint.load_numpy(str(straight))
  sb, step_b = checkpoint.load_numpy(str(old))
  assert step_a == step_b == 6
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5), sa, sb)
  assert [s for s, _ in helpers.train_entries(old)] == [s for s, _ in helpers.train_entries(straight)]
  assert records(old) == before   # kept as written (wall times included): steps 1-3 did not run again
