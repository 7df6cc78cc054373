"""The entry point as a user runs it: overrides, a misspelt key, a bad value."""
import json
import os
import subprocess
import sys

from tests import helpers

ROOT = helpers.ROOT


def _main(*args, timeout=300):
  return subprocess.run([sys.executable, "-m", "experiments.main", *args], cwd=ROOT, capture_output=True,
                        text=True, timeout=timeout)


def test_misspelt_key_fails_fast_naming_key_and_closest(tmp_path):
  r = _main("--config", "configs/resnet.py", "--workdir", str(tmp_path), "--config.lerning_rate=0.3",
            "--config.dataset.imagesize=16", timeout=60)
  assert r.returncode != 0
  assert "lerning_rate" in r.stderr and "learning_rate" in r.stderr
  assert "dataset.imagesize" in r.stderr and "dataset.image_size" in r.stderr
  assert "Traceback" not in r.stderr
  assert not os.path.exists(tmp_path / "config.json")  # failed before anything ran


def test_bad_value_and_unknown_model_are_clear(tmp_path):
  r = _main("--config", "configs/resnet.py", "--workdir", str(tmp_path), "--config.learning_rate=-1", timeout=60)
  assert r.returncode != 0 and "config.learning_rate=-1.0" in r.stderr and "Traceback" not in r.stderr
  r = _main("--config", "configs/resnet.py", "--workdir", str(tmp_path), "--config.model.name=resnet21",
            timeout=60)
  assert r.returncode != 0 and "resnet21" in r.stderr and "resnet20" in r.stderr and "Traceback" not in r.stderr


def test_unknown_preset_and_missing_config_file_are_clear(tmp_path):
  r = _main("--config", "configs/resnet.py:cifar11", "--workdir", str(tmp_path), timeout=60)
  assert r.returncode != 0 and "Traceback" not in r.stderr
  assert "cifar11" in r.stderr and "cifar10" in r.stderr and "--config" in r.stderr
  r = _main("--config", "configs/no_such.py", "--workdir", str(tmp_path), timeout=60)
  assert r.returncode != 0 and "Traceback" not in r.stderr and "no_such.py" in r.stderr


def test_overrides_reach_the_run(tmp_path):
  r = _main("--config", "configs/resnet.py", "--workdir", str(tmp_path), "--config.num_train_steps=2",
            "--config.dataset.image_size=8", "--config.model.width=0.25", "--config.learning_rate=0.05",
            "--config.eval_batch_size=400")
  assert r.returncode == 0, r.stderr[-3000:]
  saved = json.loads((tmp_path / "config.json").read_text())
  assert saved["num_train_steps"] == 2 and saved["learning_rate"] == 0.05
  assert saved["dataset"]["image_size"] == 8 and saved["model"]["width"] == 0.25
  assert "Results in" in r.stdout


def test_eval_mode_reproduces_the_last_logged_eval(tmp_path):
  """`--mode=eval` on a finished run restores its newest checkpoint and gives exactly the eval the run logged
  at that step; it writes eval/<split>_<step>.json and changes nothing else (metrics.jsonl untouched)."""
  import json
  r = helpers.run_main(tmp_path, "--config.num_train_steps=4", "--config.eval_every_steps=4")
  assert r.returncode == 0, r.stderr[-2000:]
  before = (tmp_path / "metrics.jsonl").read_text()
  logged = [json.loads(line) for line in before.splitlines() if '"eval"' in line][-1]
  r = helpers.run_main(tmp_path, "--config.num_train_steps=4", "--mode=eval")
  assert r.returncode == 0, r.stderr[-2000:]
  got = json.loads((tmp_path / "eval" / "test_4.json").read_text())
  for k in ("loss", "top1", "top5", "count"):
    assert got[k] == logged[k], k
  assert f"top1 {logged['top1']:.4f}" in r.stdout
  assert (tmp_path / "metrics.jsonl").read_text() == before
  r = helpers.run_main(tmp_path, "--config.num_train_steps=4", "--mode=eval", "--split=train")
  assert r.returncode == 0, r.stderr[-2000:]
  assert json.loads((tmp_path / "eval" / "train_4.json").read_text())["count"] == 1442


def test_unusable_workdir_is_one_fatal_line_with_status_2(tmp_path):
  """A --workdir that is a file, or a bucket whose package is missing: one FATAL line naming the workdir, the
  cause and the fix, status 2 (like every bad argument), no traceback."""
  (tmp_path / "f").write_text("x")
  for workdir, fix in [(tmp_path / "f", "Use another --workdir"), ("s3://bucket/run", "pip install s3fs")]:
    r = helpers.run_main(workdir, timeout=120)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert lines[-1].startswith(f"FATAL: --workdir {workdir}") and fix in lines[-1]
