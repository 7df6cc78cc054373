"""A `gs://` workdir stays a bucket URL through the real entry points: main, plot and sweep write and read it
through etils.epath (and Orbax), nothing lands in a local `gs:` folder. The bucket is a local folder behind
fsspec and TensorStore (tests/_fake_bucket.py), so no network is needed."""
import json
import os
import subprocess
import sys

import pytest

from tests import helpers


def _run(tmp_path, module, *args):
  cmd = [sys.executable, "-m", "tests._fake_bucket", str(tmp_path / "bucket-root"), module, *args]
  r = subprocess.run(cmd, cwd=tmp_path, env=helpers.env(1), capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  return r


def _main(tmp_path, *overrides):
  return _run(tmp_path, "experiments.main", "--config", os.path.join(helpers.ROOT, "configs/resnet.py"),
              "--workdir", "gs://lab/runs/r1", *helpers.TINY, "--config.checkpoint_every_steps=2", *overrides)


@pytest.mark.subprocess
@pytest.mark.slow
def test_gs_workdir_is_written_and_resumed_through_the_entry_points(tmp_path):
  bucket = tmp_path / "bucket-root" / "lab" / "runs" / "r1"
  r = _main(tmp_path, "--config.num_train_steps=2")
  assert "Results in gs://lab/runs/r1" in r.stdout
  assert json.loads((bucket / "config.json").read_text())["num_train_steps"] == 2
  assert os.listdir(bucket / "tensorboard") and (bucket / "final_metrics.json").exists()
  assert not (bucket / "lock.json").exists()  # released at the end
  r = _main(tmp_path, "--config.num_train_steps=4")  # resumes from the bucket's step 2
  assert "starting at step 2" in r.stderr
  steps = [json.loads(line)["step"] for line in (bucket / "metrics.jsonl").read_text().splitlines()
           if json.loads(line)["split"] == "train"]
  assert steps == [2, 4]
  assert sorted(os.listdir(bucket / "checkpoints")) == ["2", "4"]
  assert json.loads((bucket / "final_metrics.json").read_text())["step"] == 4
  r = _run(tmp_path, "experiments.plot", "gs://lab/runs", "--out", "gs://lab/plots")
  assert (tmp_path / "bucket-root" / "lab" / "plots" / "curves.png").read_bytes()[:4] == b"\x89PNG"
  assert "| r1 | 4 |" in (tmp_path / "bucket-root" / "lab" / "plots" / "results.md").read_text()
  r = _run(tmp_path, "experiments.sweep", "--config", os.path.join(helpers.ROOT, "configs/ablation.py"),
           "--workdir", "gs://lab/sweep", "--dry_run")
  assert "new      gs://lab/sweep/" in r.stdout
  assert sorted(os.listdir(tmp_path)) == ["bucket-root"]  # no local ./gs:/ folder, nothing else written here
