"""The sweep and plot entry points."""
import os
import subprocess
import sys

import pytest

from experiments import plot, sweep
from tests import _runner


def test_grid_hand_worked():
  runs = sweep.grid((("model.name", ("a", "b")), (("model.norm", "learning_rate"), (("batch", 0.1), ("none", 0.05)))))
  assert [n for n, _ in runs] == ["name=a,norm=batch,learning_rate=0.1", "name=a,norm=none,learning_rate=0.05",
                                  "name=b,norm=batch,learning_rate=0.1", "name=b,norm=none,learning_rate=0.05"]
  assert runs[3][1] == {"model.name": "b", "model.norm": "none", "learning_rate": 0.05}
  # a value with a slash (a data set name) stays one directory level; the setting keeps the slash
  (name, settings), = sweep.grid((("dataset.name", ("sentences/mr",)),))
  assert name == "name=sentences-mr" and settings == {"dataset.name": "sentences/mr"}


def _sweep(workdir, *args):
  tiny = [a for a in _runner.TINY if "stage_sizes" not in a and "image_size" not in a]
  cmd = [sys.executable, "-m", "experiments.sweep", "--config", "configs/ablation.py", "--workdir", str(workdir),
         *tiny, "--config.model.stage_sizes=(1, 1, 1)", "--config.dataset.image_size=8",
         "--config.num_train_steps=4", "--config.eval_every_steps=2", "--config.log_every_steps=2", *args]
  return subprocess.run(cmd, cwd=_runner.ROOT, env=_runner.env(1), capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_sweep_runs_grid_skips_finished_and_plots(tmp_path):
  r = _sweep(tmp_path, "--dry-run")
  assert r.returncode == 0, r.stderr[-2000:]
  assert r.stdout.count("new ") == 8 and "8 of 8 runs to train (dry run)" in r.stdout
  r = _sweep(tmp_path, "--shard", "1/4")  # runs 1 and 5 of 8
  assert r.returncode == 0, r.stdout + r.stderr[-2000:]
  assert r.stdout.count("finished ") == 2
  r = _sweep(tmp_path, "--workers", "2")
  assert r.returncode == 0, r.stdout + r.stderr[-2000:]
  assert r.stdout.count("done ") == 2 and r.stdout.count("finished ") == 6
  r = _sweep(tmp_path)
  assert "0 of 8 runs to train" in r.stdout
  plot.main([str(tmp_path), "--out", str(tmp_path / "plots"), "--filters"])
  table = (tmp_path / "plots" / "results.md").read_text().splitlines()
  assert len(table) == 2 + 8
  assert any("name=resnet56" in row and "residual=False" in row and "norm=none" in row for row in table)
  import matplotlib.image
  img = matplotlib.image.imread(str(tmp_path / "plots" / "curves.png"))
  assert img.shape[0] > 500 and img.shape[1] > 500
  run = next(p for p in tmp_path.iterdir() if p.is_dir() and p.name.startswith("name=resnet20,residual=True,norm=batch"))
  assert (run / "filters.png").exists()
  assert matplotlib.image.imread(str(run / "filters.png")).shape[0] > 100  # drawn from the checkpoint's stem


def test_plot_rejects_a_path_that_is_not_a_workdir(tmp_path):
  with pytest.raises(SystemExit, match="neither a workdir"):
    plot.main([str(tmp_path / "nope")])
