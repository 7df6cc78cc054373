"""The sweep and plot entry points."""
import json
import subprocess
import sys

import numpy as np
import pytest

from experiments import plot, sweep
from tests import helpers


def test_grid_hand_worked():
  runs = sweep.grid((("model.name", ("a", "b")), (("model.norm", "learning_rate"), (("batch", 0.1), ("none", 0.05)))))
  assert [n for n, _ in runs] == ["name=a,norm=batch,learning_rate=0.1", "name=a,norm=none,learning_rate=0.05",
                                  "name=b,norm=batch,learning_rate=0.1", "name=b,norm=none,learning_rate=0.05"]
  assert runs[3][1] == {"model.name": "b", "model.norm": "none", "learning_rate": 0.05}
  # a value with a slash (a data set name) stays one directory level; the setting keeps the slash
  (name, settings), = sweep.grid((("dataset.name", ("sentences/mr",)),))
  assert name == "name=sentences-mr" and settings == {"dataset.name": "sentences/mr"}
  # two fields ending alike keep their full paths, so that the names say which is which
  names = [n for n, _ in sweep.grid(((("mixup.alpha", "cutmix.alpha"), ((0.2, 0.0), (0.0, 0.2))),))]
  assert names == ["mixup.alpha=0.2,cutmix.alpha=0.0", "mixup.alpha=0.0,cutmix.alpha=0.2"]


def _sweep(workdir, *args):
  tiny = [a for a in helpers.TINY if "stage_sizes" not in a and "image_size" not in a]
  cmd = [sys.executable, "-m", "experiments.sweep", "--config", "configs/ablation.py", "--workdir", str(workdir),
         *tiny, "--config.model.stage_sizes=(1, 1, 1)", "--config.dataset.image_size=8",
         "--config.num_train_steps=4", "--config.eval_every_steps=2", "--config.log_every_steps=2", *args]
  return subprocess.run(cmd, cwd=helpers.ROOT, env=helpers.env(1), capture_output=True, text=True, timeout=900)


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
  r = _sweep(tmp_path, "--config.num_train_steps=6", "--dry-run")  # finished, but now asked for more steps
  assert r.stdout.count("changed ") == 8 and "8 of 8 runs to train (dry run)" in r.stdout, r.stdout
  plot.main([str(tmp_path), "--out", str(tmp_path / "plots"), "--filters"])
  table = (tmp_path / "plots" / "results.md").read_text().splitlines()
  assert len(table) == 2 + 8
  assert any("name=resnet56" in row and "residual=False" in row and "norm=none" in row for row in table)
  import matplotlib.image
  img = matplotlib.image.imread(str(tmp_path / "plots" / "curves.png"))
  assert img.shape[0] > 500 and img.shape[1] > 500
  name = "name=resnet20,residual=True,norm=batch"
  run = next(p for p in tmp_path.iterdir() if p.is_dir() and p.name.startswith(name))
  assert (run / "filters.png").exists()
  assert matplotlib.image.imread(str(run / "filters.png")).shape[0] > 100  # drawn from the checkpoint's stem


def test_last_epoch_mean_hand_worked():
  """Windows logged at epochs 4.5, 5.0 (not > 6 - 1), 5.5 and 6.0: the mean of the two at 5.5 and 6.0."""
  assert plot.last_epoch_mean([4.5, 5.0, 5.5, 6.0], [0.9, 0.5, 0.2, 0.1]) == pytest.approx(0.15)
  assert plot.last_epoch_mean([0.5], [0.3]) == pytest.approx(0.3)
  assert plot.last_epoch_mean([], []) is None


def test_plot_rejects_a_path_that_is_not_a_workdir(tmp_path):
  with pytest.raises(SystemExit, match="neither a workdir"):
    plot.main([str(tmp_path / "nope")])


def _fake_run(path, name, fold, test_top1, dev_top1, wall_s):
  """A finished workdir: config, one train and two eval entries, the dev-selected result in final_metrics.json."""
  path.mkdir(parents=True)
  (path / "config.json").write_text(json.dumps({"model": {"name": name}, "dataset": {"fold": fold}}))
  entries = [{"step": 10, "split": "train", "loss": 0.5, "error": 0.2, "wall_s": wall_s},
             {"step": 5, "split": "eval", "top1": test_top1[0], "top5": 1.0},
             {"step": 10, "split": "eval", "top1": test_top1[1], "top5": 1.0}]
  (path / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
  best = int(np.argmax(dev_top1))
  (path / "final_metrics.json").write_text(json.dumps(
      {"selected": {"step": 5 * (best + 1), "eval": {"top1": test_top1[best]}, "dev": {"top1": dev_top1[best]}}}))


def test_mean_over_folds_hand_worked(tmp_path):
  """Per-run rows pick the test top-1 at the best dev step; --mean_over groups the folds (mean, sample sd)."""
  for fold, test, dev in ((0, (0.70, 0.60), (0.9, 0.8)), (1, (0.50, 0.80), (0.1, 0.2)), (2, (0.75, 0.10), (0.5, 0.4))):
    _fake_run(tmp_path / f"a{fold}", "kim", fold, test, dev, wall_s=60.0 * (fold + 1))
  _fake_run(tmp_path / "b0", "other", 0, (0.2, 0.3), (0.0, 0.0), wall_s=30.0)
  runs = plot.find_workdirs([str(tmp_path)])
  rows = plot.table(runs).splitlines()
  assert rows[2].startswith("| fold=0, name=kim | 10 | 1.0000 |") and rows[2].endswith("| 0.7000 (5) | 0.7000 (5) |")
  assert rows[3].endswith("| 0.8000 (10) | 0.8000 (10) |")
  mean = plot.mean_table(runs, "dataset.fold").splitlines()
  # fold-selected accuracies 0.70, 0.80, 0.75: mean 0.75, sd 0.05; wall 1, 2, 3 min
  # 95% t interval: 0.75 +- t(0.975, 2) 0.05 / sqrt 3 = 0.75 +- 0.1242
  assert mean[2] == "| name=kim | 3 | 0.7500 | 0.0500 | [0.6258, 0.8742] | 0.7000 | 0.8000 | 2.0 |"
  assert mean[3] == "| name=other | 1 | 0.2000 | nan | - | 0.2000 | 0.2000 | 0.5 |"


def test_fig6_series_splits_plain_and_residual(tmp_path):
  """Fig. 6's panels: batch-norm runs only, by residual; test error is 1 - top-1; training error as logged."""
  for name, residual, norm, err in (("resnet20", True, "batch", 0.1), ("resnet56", True, "batch", 0.05),
                                    ("resnet20", False, "batch", 0.2), ("resnet20", False, "none", 0.9)):
    w = tmp_path / f"{name}-{residual}-{norm}"
    w.mkdir()
    (w / "config.json").write_text(json.dumps({"model": {"name": name, "residual": residual, "norm": norm}}))
    entries = [{"step": 5, "epoch": 0.5, "split": "train", "error": 2 * err},
               {"step": 10, "epoch": 1.0, "split": "train", "error": err},
               {"step": 10, "epoch": 1.0, "split": "eval", "top1": 1 - 1.5 * err}]
    (w / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
  runs = plot.find_workdirs([str(tmp_path)])
  series = plot.fig6_series(runs)
  assert sorted(series["residual"]) == ["resnet20", "resnet56"] and list(series["plain"]) == ["resnet20"]
  (train_x, train_y), (test_x, test_y) = series["plain"]["resnet20"][0]
  assert train_x == [0.5, 1.0] and train_y == [0.4, 0.2] and test_x == [1.0]
  np.testing.assert_allclose(test_y, [0.3])
  assert plot.plot_fig6(runs, tmp_path).exists()
