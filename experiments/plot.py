"""Learning curves and a results table for any set of workdirs.

  python -m experiments.plot runs/ablation [more workdirs or parents ...] [--out DIR] [--x epoch|step]

Writes DIR/curves.png (training loss on a log scale, training error, test top-1 and top-5 error; one line
per run, labelled by the config fields that differ between the runs) and DIR/results.md (final and best
metrics per run, wall time, and the test top-1 at the best dev evaluation where a dev split selects).
`--mean_over dataset.fold` also writes DIR/mean.md: mean, sd and a 95% t-interval (with n) over the runs that
differ only in that field. Runs that differ only in `seed` (a sweep's seed axis) are aggregated by themselves:
DIR/seeds.md holds that table for the final test top-1 (and the EMA's, where logged), curves.png draws each
setting as the mean over seeds with a band of +- 1 sd, and `--baseline 'field=value, ...'` adds to seeds.md each
setting's difference from the setting with those values, with its 95% Welch interval over seeds (`compare`).
`--fig6` writes DIR/fig6.png, the two panels of He et al. 2016 Fig. 6 (plain and residual nets; mean over seeds
with a band where there are several).
DIR defaults to the first argument. With --filters, each workdir also gets filters.png, the first convolution's
filters of its newest checkpoint.
"""
import io
import json

import flax
import numpy as np
import scipy.stats  # installed with scikit-learn, a dependency of the library
from absl import flags

from cnnjax import build, cli, viz
from cnnjax import workdir as workdir_lib

M = workdir_lib.METRICS


def find_workdirs(paths):
  """The workdirs among `paths` and their sub-folders (local or URLs), as epath.Paths."""
  out = []
  for p in map(workdir_lib.path, paths):
    if (p / M).exists():
      out.append(p)
    elif p.is_dir():
      out.extend(sorted(d for d in p.iterdir() if (d / M).exists()))
    else:
      raise SystemExit(f"error: {str(p)!r} is neither a workdir (no {M}) nor a folder of workdirs")
  return out


def labels(workdirs):
  """{workdir: 'name=resnet56, residual=False, ...'} from the config fields that differ between runs."""
  cfgs = {w: flax.traverse_util.flatten_dict(_config(w), sep=".") for w in workdirs}
  keys = sorted({k for c in cfgs.values() for k in c})
  varying = [k for k in keys if k != "sweep" and len({json.dumps(c.get(k), sort_keys=True) for c in cfgs.values()}) > 1]
  if not varying:
    return {w: w.name for w in workdirs}, {}
  return ({w: ", ".join(f"{workdir_lib.field_label(k, varying)}={cfgs[w].get(k)}" for k in varying) for w in workdirs},
          {w: {k: cfgs[w].get(k) for k in varying} for w in workdirs})


def _config(w) -> dict:
  """A run's config as it trained: config.json over the base config, so that a run saved before a field existed
  reads that field's default instead of differing from newer runs in it (old names read as new)."""
  if workdir_lib.read_json(w / workdir_lib.CONFIG) is None:
    return {}
  return build.saved_config(w).to_dict()


def groups(workdirs, field: str = "seed"):
  """{label: [workdirs]}: the runs that differ only in config `field` (e.g. seed) as one group each, labelled by
  the other varying fields ('all' where none), in the order of their first run."""
  _, fields = labels(workdirs)
  out = {}
  for w in workdirs:
    rest = {k: v for k, v in fields.get(w, {}).items() if k != field}
    key = ", ".join(f"{workdir_lib.field_label(k, list(rest))}={v}" for k, v in rest.items()) or "all"
    out.setdefault(key, []).append(w)
  return out


def t_interval(values, confidence: float = 0.95):
  """(mean, sample sd, lower, upper, n) of `values`: Student's t interval for the mean over n runs (seeds); sd and
  the interval are nan for n = 1."""
  x = np.asarray(values, np.float64)
  n, mean = len(x), float(np.mean(x))
  if n < 2:
    return mean, float("nan"), float("nan"), float("nan"), n
  sd = float(np.std(x, ddof=1))
  lo, hi = scipy.stats.t.interval(confidence, n - 1, loc=mean, scale=sd / np.sqrt(n))
  return mean, sd, float(lo), float(hi), n


def compare(a, b, confidence: float = 0.95):
  """(mean(a) - mean(b), lower, upper, Welch's degrees of freedom): the difference of two settings' means over
  their seeds with its Welch t interval (unequal variances); nan where either has fewer than two runs."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  diff = float(np.mean(a) - np.mean(b))
  if len(a) < 2 or len(b) < 2:
    return diff, float("nan"), float("nan"), float("nan")
  res = scipy.stats.ttest_ind(a, b, equal_var=False)
  ci = res.confidence_interval(confidence)
  return diff, float(ci.low), float(ci.high), float(res.df)


def mean_curve(series):
  """(xs, mean, sd) over runs' (xs, ys), at the x values every run logged (sd 0 for one run)."""
  common = sorted(set.intersection(*(set(xs) for xs, _ in series))) if series else []
  ys = np.array([[dict(zip(xs, y))[x] for x in common] for xs, y in series], np.float64).reshape(len(series), -1)
  sd = ys.std(axis=0, ddof=1) if len(series) > 1 else np.zeros(len(common))
  return common, (ys.mean(axis=0) if len(series) else np.zeros(0)), sd


def curves(entries, split, key, x):
  pts = [(e[x], e[key]) for e in entries if e["split"] == split and key in e and isinstance(e[key], (int, float))]
  return [p[0] for p in pts], [p[1] for p in pts]


def plot(workdirs, out_dir, x="epoch"):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  names, fields = labels(workdirs)
  data = {w: workdir_lib.read_jsonl(w / M) for w in workdirs}
  fig, axes = plt.subplots(2, 2, figsize=(14, 10))
  panels = [("train", "loss", "training loss", True), ("train", "error", "training error (top-1)", False),
            ("eval", "top1", "test top-1 error", False), ("eval", "top5", "test top-5 error", False)]
  colors = plt.get_cmap("tab10").colors
  seeds = groups(workdirs)
  banded = any(len(ws) > 1 for ws in seeds.values())
  lines = seeds.items() if banded else ((names[w], [w]) for w in workdirs)  # over seeds: mean +- sd
  for i, (label, ws) in enumerate(lines):
    dashed = any(v is False for v in fields.get(ws[0], {}).values())
    for ax, (split, key, title, log_y) in zip(axes.flat, panels):
      xs, ys, sd = mean_curve([curves(data[w], split, key, x) for w in ws])
      if split == "eval":
        ys = 1.0 - ys
      ax.plot(xs, ys, color=colors[i % 10], linestyle="--" if dashed else "-", marker="." if split == "eval" else None,
              label=f"{label} (n={len(ws)})" if banded else label, linewidth=1.5)
      if len(ws) > 1:
        ax.fill_between(xs, ys - sd, ys + sd, color=colors[i % 10], alpha=0.2, linewidth=0)
  for ax, (split, key, title, log_y) in zip(axes.flat, panels):
    ax.set_title(title)
    ax.set_xlabel(x)
    ax.set_ylabel(title.split(" (")[0])
    ax.set_yscale("log" if log_y else "linear")
    ax.grid(True, alpha=0.3)
  axes.flat[0].legend(fontsize=8, loc="upper right")
  fig.suptitle(f"{len(workdirs)} runs: " + ", ".join(sorted({k.split('.')[-1] for f in fields.values() for k in f}))
               + ("; lines: mean over seeds, bands: +- 1 sd" if banded else ""))
  fig.tight_layout()
  png = workdir_lib.path(out_dir) / "curves.png"
  save_png(fig, png, dpi=110)
  return png


def fig6_series(workdirs):
  """He et al. 2016 Fig. 6's data: {'plain' | 'residual': {model name: [(train (epochs, errors), test (epochs,
  errors)), one per run (seed)]}} for the runs with batch norm (config model.norm == 'batch')."""
  out = {"plain": {}, "residual": {}}
  for w in workdirs:
    cfg = workdir_lib.read_json(w / workdir_lib.CONFIG) or {}
    model = cfg.get("model", {})
    if model.get("norm") != "batch":
      continue
    es = workdir_lib.read_jsonl(w / M)
    test = curves(es, "eval", "top1", "epoch")
    out["residual" if model.get("residual") else "plain"].setdefault(model["name"], []).append(
        (curves(es, "train", "error", "epoch"), (test[0], [1.0 - y for y in test[1]])))
  return out


def last_epoch_mean(epochs, values):
  """Mean of the values logged within the last epoch (epoch > final epoch - 1), or None when nothing is logged:
  the training error of the end of training, less noisy than the last window alone."""
  last = [v for e, v in zip(epochs, values) if e > epochs[-1] - 1] if epochs else []
  return float(np.mean(last)) if last else None


def plot_fig6(workdirs, out_dir):
  """Two panels as the paper's Fig. 6: plain nets left, ResNets right; thin lines training error, bold test."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  series = fig6_series(workdirs)
  fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
  for ax, (kind, nets) in zip(axes, series.items()):
    for i, (name, runs) in enumerate(sorted(nets.items(), key=lambda kv: int(kv[0][6:] or 0))):
      color = plt.get_cmap("tab10").colors[i]
      label = name.replace("resnet", "plain-" if kind == "plain" else "ResNet-")
      (tx, ty, _), (ex, ey, esd) = (mean_curve([r[j] for r in runs]) for j in (0, 1))
      ax.plot(tx, ty, color=color, linewidth=0.8, alpha=0.8)
      trains = [last_epoch_mean(*r[0]) for r in runs if r[0][0]]
      train = float(np.mean(trains)) if trains else None
      figs = ", ".join(([f"train {train:.2%}"] if train is not None else []) +
                       ([f"test {ey[-1]:.2%}"] if len(ey) else [])
                       + ([f"mean of {len(runs)}"] if len(runs) > 1 else []))
      ax.plot(ex, ey, color=color, linewidth=2.2, marker=".", label=f"{label} ({figs})" if figs else label)
      if len(runs) > 1:
        ax.fill_between(ex, ey - esd, ey + esd, color=color, alpha=0.2, linewidth=0)
    ax.set_title(f"{kind} nets: thin = training error, bold = test error")
    ax.set_xlabel("epoch")
    finals = [ys[-1] for nets in series.values() for runs in nets.values() for (_, ty), (_, ey) in runs
              for ys in (ty, ey) if ys]
    ax.set_ylim(0, min(1.0, 2.5 * max(finals, default=0.4)))   # the end of training, as the paper's 0-20%
    ax.grid(True, alpha=0.3)
    ax.legend()
  axes[0].set_ylabel("top-1 error")
  fig.tight_layout()
  png = workdir_lib.path(out_dir) / "fig6.png"
  save_png(fig, png, dpi=110)
  return png


def save_png(fig, path, dpi=100) -> None:
  """Saves and closes a matplotlib figure at `path`, local or a URL."""
  import matplotlib.pyplot as plt
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=dpi)
  plt.close(fig)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(buf.getvalue())


def _fmt(v) -> str:
  return f"{v:.4f}" if isinstance(v, (int, float)) else str(v)


def summary(w) -> dict:
  """One run's figures: steps, wall minutes, final and best test top-1, the dev-selected test top-1 (if any)."""
  es = workdir_lib.read_jsonl(w / M)
  tr = [e for e in es if e["split"] == "train"]
  ev = [e for e in es if e["split"] == "eval" and isinstance(e.get("top1"), (int, float))]
  sel = (workdir_lib.read_json(w / workdir_lib.FINAL) or {}).get("selected") or {}
  best = max(ev, key=lambda e: e["top1"]) if ev else None
  ema = [e for e in es if e["split"] == "eval_ema" and isinstance(e.get("top1"), (int, float))]
  return {"steps": tr[-1]["step"] if tr else 0, "ema_top1": ema[-1]["top1"] if ema else None,
          "wall_min": tr[-1]["wall_s"] / 60 if tr and "wall_s" in tr[-1] else None,
          "train_loss": tr[-1]["loss"] if tr else None, "train_error": tr[-1]["error"] if tr else None,
          "top1": ev[-1]["top1"] if ev else None, "top5": ev[-1]["top5"] if ev else None,
          "best": (best["top1"], best["step"]) if best else None,
          "selected": (sel["eval"]["top1"], sel["step"]) if "eval" in sel else None}


def table(workdirs):
  names, _ = labels(workdirs)
  rows = ["| run | steps | wall (min) | final train loss | final train error | final test top-1 | final test top-5 | "
          "best test top-1 (step) | test top-1 at best dev (step) |", "|---|---|---|---|---|---|---|---|---|"]
  pair = lambda p: f"{p[0]:.4f} ({p[1]})" if p else "-"
  summaries = {w: summary(w) for w in workdirs}
  ema = any(s["ema_top1"] is not None for s in summaries.values())  # runs with EMA: its final test top-1 too
  if ema:
    rows = [rows[0] + " final EMA test top-1 |", rows[1] + "---|"]
  for w in workdirs:
    s = summaries[w]
    rows.append(f"| {names[w]} | {s['steps']} | {_fmt(s['wall_min']) if s['wall_min'] else '-'} | "
                + " | ".join(_fmt(s[k]) if s[k] is not None else "-"
                             for k in ("train_loss", "train_error", "top1", "top5"))
                + f" | {pair(s['best'])} | {pair(s['selected'])} |"
                + (f" {_fmt(s['ema_top1']) if s['ema_top1'] is not None else '-'} |" if ema else ""))
  return "\n".join(rows) + "\n"


def _interval(lo, hi) -> str:
  return "-" if np.isnan(lo) else f"[{lo:.4f}, {hi:.4f}]"


def mean_table(workdirs, field: str, baseline: str | None = None):
  """Runs that differ only in config `field` (seed, dataset.fold) as one row: the number of runs n, mean, sample
  sd and 95% t-interval of the test top-1 (at the best dev evaluation where a dev split selects, else final), its
  min and max, the wall time per run; where logged, the same mean and interval for the EMA weights' final test
  top-1. `baseline`: 'field=value, ...' naming the row whose label holds all of these settings (in any order);
  every row then also gets its difference from it
  (mean minus the baseline's mean) with the 95% Welch interval over the runs (`compare`)."""
  grouped = groups(workdirs, field)
  acc = {k: np.array([(s["selected"] or (s["top1"], 0))[0] for s in map(summary, ws)], np.float64)
         for k, ws in grouped.items()}
  ema = {k: [s["ema_top1"] for s in map(summary, ws) if s["ema_top1"] is not None] for k, ws in grouped.items()}
  has_ema = any(ema.values())
  base = None
  if baseline is not None:
    want = {part.strip() for part in baseline.split(",")}
    matches = [k for k in grouped if want <= set(k.split(", "))]
    if len(matches) != 1:
      raise SystemExit(f"error: --baseline {baseline!r} matches {len(matches)} settings ({matches}); known: "
                       f"{list(grouped)}")
    base = matches[0]
  head = (f"| runs (over {field}) | n | test top-1 mean (at best dev, where selected) | sd | 95% interval | min | max"
          " | "
          "wall per run (min) |")
  rule = "|---|---|---|---|---|---|---|---|"
  if has_ema:
    head, rule = head + " EMA test top-1 mean | EMA 95% interval |", rule + "---|---|"
  if base is not None:
    head, rule = head + f" difference from {base} | 95% Welch interval |", rule + "---|---|"
  rows = [head, rule]
  for key, ws in grouped.items():
    mean, sd, lo, hi, n = t_interval(acc[key])
    wall = [s["wall_min"] for s in map(summary, ws) if s["wall_min"]]
    row = (f"| {key} | {n} | {mean:.4f} | {sd:.4f} | {_interval(lo, hi)} | {acc[key].min():.4f} | "
           f"{acc[key].max():.4f} | {f'{np.mean(wall):.1f}' if wall else '-'} |")
    if has_ema:
      e = t_interval(ema[key]) if ema[key] else (float("nan"),) * 5
      row += f" {e[0]:.4f} | {_interval(e[2], e[3])} |" if ema[key] else " - | - |"
    if base is not None:
      if key == base:
        row += " (baseline) | - |"
      else:
        diff, dlo, dhi, _ = compare(acc[key], acc[base])
        row += f" {diff:+.4f} | {_interval(dlo, dhi)} |"
    rows.append(row)
  return "\n".join(rows) + "\n"


def define_flags(fv: flags.FlagValues) -> flags.FlagValues:
  """The command's flags; its positional arguments are workdirs, or folders holding workdirs."""
  flags.DEFINE_string("out", None, "output folder DIR for curves.png and results.md (default: the first path)",
                      flag_values=fv)
  flags.DEFINE_enum("x", "epoch", ["epoch", "step"], "the curves' x axis", flag_values=fv)
  flags.DEFINE_bool("filters", False, "also write each run's first-layer filters as <workdir>/filters.png",
                    flag_values=fv)
  flags.DEFINE_bool("fig6", False, "also write DIR/fig6.png: He et al. 2016 Fig. 6's two panels (plain and residual "
                    "nets with batch norm, training and test error by epoch)", flag_values=fv)
  flags.DEFINE_string("mean_over", None, "a config field (e.g. dataset.fold): also write DIR/mean.md, one row per "
                      "group of runs that differ only in it", flag_values=fv)
  flags.DEFINE_string("baseline", None, "'field=value, ...' (as in the table's labels): seeds.md (and mean.md) also "
                      "give each setting's difference from that one, with its 95% Welch interval over seeds",
                      flag_values=fv)
  return fv


def main(argv=None):
  """The command on `argv` (without the program name), as a function."""
  return cli.call(define_flags, run, argv)


def run(a, paths):
  if not paths:
    raise SystemExit("error: give at least one workdir or folder of workdirs")
  a.paths = paths
  workdirs = find_workdirs(a.paths)
  if not workdirs:
    raise SystemExit(f"error: no workdirs with metrics.jsonl under {a.paths}")
  out = a.out or a.paths[0]
  png = plot(workdirs, out, a.x)
  md = workdir_lib.path(out) / "results.md"
  md.write_text(table(workdirs))
  print(f"wrote {png} and {md} ({len(workdirs)} runs)")
  if a.fig6:
    print("wrote", plot_fig6(workdirs, out))
  if a.mean_over:
    (workdir_lib.path(out) / "mean.md").write_text(mean_table(workdirs, a.mean_over, a.baseline))
    print(f"wrote {workdir_lib.path(out) / 'mean.md'}")
  if any(len(ws) > 1 for ws in groups(workdirs, "seed").values()):
    (workdir_lib.path(out) / "seeds.md").write_text(mean_table(workdirs, "seed", a.baseline))
    print(f"wrote {workdir_lib.path(out) / 'seeds.md'}")
  if a.filters:
    for w in workdirs:
      if (w / "checkpoints").is_dir():
        print("wrote", viz.plot_workdir_filters(w, w / "filters.png"))


if __name__ == "__main__":
  cli.program(define_flags, run)
