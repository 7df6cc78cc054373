"""Seeds as a sweep axis, and their aggregation in experiments.plot: t intervals, Welch differences (hand-worked,
and scipy.stats as the reference), seed groups, mean curves, the seeds table and the banded plots."""
import json

import numpy as np
import pytest
import scipy.stats

from experiments import plot, sweep


def test_t_interval_hand_worked():
  """0.70, 0.80, 0.75: mean 0.75, sd 0.05, n 3; t(0.975, 2 df) = 4.302653 (tables): half-width
  4.302653 x 0.05 / sqrt 3 = 0.124207 (catches a z quantile 1.96, a population sd, sqrt(n - 1))."""
  mean, sd, lo, hi, n = plot.t_interval([0.70, 0.80, 0.75])
  assert (n, mean, sd) == (3, pytest.approx(0.75), pytest.approx(0.05))
  assert lo == pytest.approx(0.75 - 0.124207, abs=1e-6) and hi == pytest.approx(0.75 + 0.124207, abs=1e-6)
  mean, sd, lo, hi, n = plot.t_interval([0.5])
  assert n == 1 and mean == 0.5 and np.isnan(sd) and np.isnan(lo)


def test_compare_is_welchs_interval():
  """a = 1, 2, 3 (var 1), b = 2, 4, 6, 8 (var 20/3): difference -3, se^2 = 1/3 + 5/3 = 2, Welch-Satterthwaite
  df = 4 / ((1/3)^2 / 2 + (5/3)^2 / 3) = 4.0755; half-width t(0.975, df) sqrt 2; and equal to scipy's Welch test
  (catches a pooled-variance interval or the wrong degrees of freedom)."""
  diff, lo, hi, df = plot.compare([1, 2, 3], [2, 4, 6, 8])
  assert diff == -3 and df == pytest.approx(4.0 / ((1 / 3) ** 2 / 2 + (5 / 3) ** 2 / 3))
  half = scipy.stats.t.ppf(0.975, df) * np.sqrt(2.0)
  assert (lo, hi) == (pytest.approx(-3 - half), pytest.approx(-3 + half))
  ref = scipy.stats.ttest_ind([1, 2, 3], [2, 4, 6, 8], equal_var=False).confidence_interval(0.95)
  assert (lo, hi) == (pytest.approx(ref.low), pytest.approx(ref.high))
  pooled = scipy.stats.ttest_ind([1, 2, 3], [2, 4, 6, 8]).confidence_interval(0.95)
  assert lo != pytest.approx(pooled.low)


def test_mean_curve_over_common_steps():
  xs, mean, sd = plot.mean_curve([([1, 2, 3], [0.1, 0.2, 0.3]), ([1, 2], [0.3, 0.4])])
  assert xs == [1, 2]
  np.testing.assert_allclose(mean, [0.2, 0.3])
  np.testing.assert_allclose(sd, [np.sqrt(0.02), np.sqrt(0.02)])


def test_seeds_axis_is_added_last_and_refused_twice():
  s = sweep.with_seeds((("model.name", ("a", "b")),), ["0", "1"])
  assert [n for n, _ in sweep.grid(s)] == ["name=a,seed=0", "name=a,seed=1", "name=b,seed=0", "name=b,seed=1"]
  assert sweep.grid(s)[3][1] == {"model.name": "b", "seed": 1}
  with pytest.raises(Exception, match="already has a seed axis"):
    sweep.with_seeds(s, ["2"])
  assert sweep.grid(sweep.with_seeds((), ["3"])) == [("seed=3", {"seed": 3})]   # a config without a sweep


def _run(path, seed, ema_decay, top1s, ema_top1=None):
  """A finished workdir: config (seed, ema.decay, mixup.alpha fixed), train and eval entries per epoch."""
  path.mkdir(parents=True)
  (path / "config.json").write_text(json.dumps({"seed": seed, "ema": {"decay": ema_decay},
                                                "mixup": {"alpha": 0.0}, "cutmix": {"alpha": 0.0}}))
  es = []
  for i, t in enumerate(top1s):
    es += [{"step": 10 * (i + 1), "epoch": i + 1.0, "split": "train", "loss": 1.0 / (i + 1), "error": 0.5 / (i + 1),
            "wall_s": 60.0 * (i + 1)},
           {"step": 10 * (i + 1), "epoch": i + 1.0, "split": "eval", "top1": t, "top5": 1.0}]
  if ema_top1 is not None:
    es.append({"step": 10 * len(top1s), "epoch": float(len(top1s)), "split": "eval_ema", "top1": ema_top1})
  (path / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in es))


@pytest.mark.slow
def test_seeds_table_groups_intervals_and_baseline(tmp_path):
  """Six runs, two settings x three seeds: seeds.md has one row per setting with n 3, mean, sd, the t interval,
  the EMA column, and the difference from the baseline with Welch's interval; curves.png is drawn with bands."""
  for seed, (a, b) in enumerate(((0.70, 0.80), (0.80, 0.85), (0.75, 0.90))):
    _run(tmp_path / f"base{seed}", seed, 0.0, [0.5, a])
    _run(tmp_path / f"ema{seed}", seed, 0.9, [0.5, b], ema_top1=b + 0.01)
  runs = plot.find_workdirs([str(tmp_path)])
  g = plot.groups(runs)
  assert list(g) == ["decay=0.0", "decay=0.9"] and all(len(v) == 3 for v in g.values())
  rows = plot.mean_table(runs, "seed", baseline="decay=0.0").splitlines()
  assert rows[2].startswith("| decay=0.0 | 3 | 0.7500 | 0.0500 | [0.6258, 0.8742] | 0.7000 | 0.8000 | 2.0 | - | - |")
  assert rows[2].endswith("(baseline) | - |")
  diff, lo, hi, _ = plot.compare([0.80, 0.85, 0.90], [0.70, 0.80, 0.75])
  assert rows[3].startswith("| decay=0.9 | 3 | 0.8500 | 0.0500 |")
  assert "| 0.8600 |" in rows[3] and rows[3].endswith(f"| {diff:+.4f} | [{lo:.4f}, {hi:.4f}] |")
  with pytest.raises(SystemExit, match="matches 0 settings"):
    plot.mean_table(runs, "seed", baseline="decay")   # a setting is named by field=value
  plot.main([str(tmp_path), "--out", str(tmp_path / "plots"), "--baseline", "decay=0.0"])
  assert (tmp_path / "plots" / "seeds.md").read_text().splitlines()[3] == rows[3]
  assert (tmp_path / "plots" / "curves.png").exists()
  results = (tmp_path / "plots" / "results.md").read_text().splitlines()
  assert results[0].endswith("final EMA test top-1 |") and results[2].endswith("| - |")   # base0: no EMA
  assert results[5].endswith("| 0.8100 |")   # ema0: 0.80 + 0.01


def test_a_run_saved_before_a_field_existed_groups_with_runs_at_its_default(tmp_path):
  """A run whose config.json predates `dataset.num_folds` (default 10) and runs that save it as 10 differ only in
  seed: one group, labelled by nothing else (reading config.json alone made the old run a setting of its own,
  'num_folds=None'). A run at another value still stands apart."""
  for seed in range(3):
    _run(tmp_path / f"r{seed}", seed, 0.0, [0.5, 0.7])
  for seed, folds in ((1, 10), (2, 10), (3, 5)):
    c = json.loads((tmp_path / f"r{min(seed, 2)}" / "config.json").read_text())
    path = tmp_path / f"r{seed}"
    if seed == 3:
      _run(path, 0, 0.0, [0.5, 0.7])
    c.update(seed=0 if seed == 3 else seed, dataset={"num_folds": folds})
    (path / "config.json").write_text(json.dumps(c))
  g = plot.groups(plot.find_workdirs([str(tmp_path)]))
  assert {k: [w.name for w in v] for k, v in g.items()} == {"num_folds=10": ["r0", "r1", "r2"], "num_folds=5": ["r3"]}
