"""The entry point as a user runs it: overrides, a misspelt key, a bad value."""
import json
import os
import subprocess
import sys

import pytest

from tests import helpers

ROOT = helpers.ROOT


def _main(*args, timeout=300):
  return subprocess.run([sys.executable, "-m", "experiments.main", *args], cwd=ROOT, capture_output=True,
                        text=True, timeout=timeout)


@pytest.mark.subprocess
def test_misspelt_key_fails_fast_naming_key_and_closest(tmp_path):
  r = _main("--config", "configs/resnet.py", "--workdir", str(tmp_path), "--config.lerning_rate=0.3",
            "--config.dataset.imagesize=16", timeout=60)
  assert r.returncode != 0
  assert "lerning_rate" in r.stderr and "learning_rate" in r.stderr
  assert "dataset.imagesize" in r.stderr and "dataset.image_size" in r.stderr
  assert "Traceback" not in r.stderr
  assert not os.path.exists(tmp_path / "config.json")  # failed before anything ran


@pytest.mark.subprocess
@pytest.mark.slow
def test_bad_value_and_unknown_model_are_clear(tmp_path):
  r = _main("--config", "configs/resnet.py", "--workdir", str(tmp_path), "--config.learning_rate=-1", timeout=60)
  assert r.returncode != 0 and "config.learning_rate=-1.0" in r.stderr and "Traceback" not in r.stderr
  r = _main("--config", "configs/resnet.py", "--workdir", str(tmp_path), "--config.model.name=resnet21",
            timeout=60)
  assert r.returncode != 0 and "resnet21" in r.stderr and "resnet20" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
@pytest.mark.subprocess
def test_unknown_preset_and_missing_config_file_are_clear(tmp_path):
  r = _main("--config", "configs/resnet.py:cifar11", "--workdir", str(tmp_path), timeout=60)
  assert r.returncode != 0 and "Traceback" not in r.stderr
  assert "cifar11" in r.stderr and "cifar10" in r.stderr and "--config" in r.stderr
  r = _main("--config", "configs/no_such.py", "--workdir", str(tmp_path), timeout=60)
  assert r.returncode != 0 and "Traceback" not in r.stderr and "no_such.py" in r.stderr


@pytest.mark.slow
@pytest.mark.subprocess
def test_overrides_reach_the_run(tmp_path):
  r = _main("--config", "configs/resnet.py", "--workdir", str(tmp_path), "--config.num_train_steps=2",
            "--config.dataset.image_size=8", "--config.model.width=0.25", "--config.learning_rate=0.05",
            "--config.eval_batch_size=400")
  assert r.returncode == 0, r.stderr[-3000:]
  saved = json.loads((tmp_path / "config.json").read_text())
  assert saved["num_train_steps"] == 2 and saved["learning_rate"] == 0.05
  assert saved["dataset"]["image_size"] == 8 and saved["model"]["width"] == 0.25
  assert "Results in" in r.stdout


def _files(workdir):
  """{relative path: bytes} of every file of a workdir but eval/ (what --mode=eval may write)."""
  out = {}
  for dirpath, _, names in os.walk(workdir):
    for n in names:
      rel = os.path.relpath(os.path.join(dirpath, n), workdir)
      if not rel.startswith("eval"):
        with open(os.path.join(dirpath, n), "rb") as f:
          out[rel] = f.read()
  return out


@pytest.mark.slow
@pytest.mark.subprocess
def test_eval_mode_reproduces_logged_evals_takes_no_lock_and_changes_no_file(tmp_path):
  """`--mode=eval` restores the newest checkpoint (or `--step N`) and gives exactly the eval the run logged at
  that step, writing eval/<split>_<step>.json; it runs while another process holds the workdir's lock, and every
  other file of the workdir stays byte for byte as it was."""
  from cnnjax import workdir as workdir_lib
  r = helpers.run_main(tmp_path, "--config.num_train_steps=4", "--config.eval_every_steps=2",
                       "--config.checkpoint_every_steps=2")
  assert r.returncode == 0, r.stderr[-2000:]
  logged = {e["step"]: e for e in helpers.metrics(tmp_path, "eval")}
  assert logged[2]["top1"] != logged[4]["top1"] or logged[2]["loss"] != logged[4]["loss"]
  before = _files(tmp_path)
  with workdir_lib.Lock(str(tmp_path)):  # a training run holds the workdir: evaluation still runs
    held = _files(tmp_path)
    for step, args in [(4, []), (2, ["--step=2"])]:
      r = helpers.run_main(tmp_path, "--config.num_train_steps=4", "--mode=eval", *args)
      assert r.returncode == 0, r.stderr[-2000:]
      got = json.loads((tmp_path / "eval" / f"test_{step}.json").read_text())
      assert got["step"] == step
      for k in ("loss", "top1", "top5", "count"):
        assert got[k] == logged[step][k], (step, k)
      assert f"eval of step {step}: top1 {logged[step]['top1']:.4f}" in r.stdout
    r = helpers.run_main(tmp_path, "--config.num_train_steps=4", "--mode=eval", "--split=train")
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((tmp_path / "eval" / "train_4.json").read_text())["count"] == 1442
    assert _files(tmp_path) == held
  assert {k: v for k, v in before.items() if k != "lock.json"} == \
         {k: v for k, v in _files(tmp_path).items() if k != "lock.json"}


@pytest.mark.subprocess
def test_unusable_workdir_is_one_fatal_line_with_status_2(tmp_path):
  """A --workdir that is a file, or a bucket whose package is missing: one FATAL line naming the workdir, the
  cause and the fix, status 2 (like every bad argument), no traceback."""
  (tmp_path / "f").write_text("x")
  for workdir, fix in [(tmp_path / "f", "Use another --workdir"), ("s3://bucket/run", "pip install s3fs")]:
    r = helpers.run_main(workdir, timeout=120)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert lines[-1].startswith(f"FATAL: --workdir {workdir}") and fix in lines[-1]
