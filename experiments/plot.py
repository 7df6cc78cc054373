"""Learning curves and a results table for any set of workdirs.

  python -m experiments.plot runs/ablation [more workdirs or parents ...] [--out DIR] [--x epoch|step]

Writes DIR/curves.png (training loss on a log scale, training error, test top-1 and top-5 error; one line
per run, labelled by the config fields that differ between the runs) and DIR/results.md (final and best
metrics per run, wall time, and the test top-1 at the best dev evaluation where a dev split selects).
`--mean_over dataset.fold` also writes DIR/mean.md: mean and sd over the runs that differ only in that field;
`--fig6` writes DIR/fig6.png, the two panels of He et al. 2016 Fig. 6 (plain and residual nets).
DIR defaults to the first argument. With --filters, each workdir also gets filters.png, the first convolution's
filters of its newest checkpoint.
"""
import io
import json

import flax
import numpy as np
from absl import flags

from cnnjax import cli, viz
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
  cfgs = {w: flax.traverse_util.flatten_dict(workdir_lib.read_json(w / workdir_lib.CONFIG) or {}, sep=".")
          for w in workdirs}
  keys = sorted({k for c in cfgs.values() for k in c})
  varying = [k for k in keys if k != "sweep" and len({json.dumps(c.get(k), sort_keys=True) for c in cfgs.values()}) > 1]
  if not varying:
    return {w: w.name for w in workdirs}, {}
  return ({w: ", ".join(f"{k.split('.')[-1]}={cfgs[w].get(k)}" for k in varying) for w in workdirs},
          {w: {k: cfgs[w].get(k) for k in varying} for w in workdirs})


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
  for i, w in enumerate(workdirs):
    dashed = any(v is False for v in fields.get(w, {}).values())
    for ax, (split, key, title, log_y) in zip(axes.flat, panels):
      xs, ys = curves(data[w], split, key, x)
      if split == "eval":
        ys = [1.0 - y for y in ys]
      ax.plot(xs, ys, color=colors[i % 10], linestyle="--" if dashed else "-", marker="." if split == "eval" else None,
              label=names[w], linewidth=1.5)
  for ax, (split, key, title, log_y) in zip(axes.flat, panels):
    ax.set_title(title)
    ax.set_xlabel(x)
    ax.set_ylabel(title.split(" (")[0])
    ax.set_yscale("log" if log_y else "linear")
    ax.grid(True, alpha=0.3)
  axes.flat[0].legend(fontsize=8, loc="upper right")
  fig.suptitle(f"{len(workdirs)} runs: " + ", ".join(sorted({k.split('.')[-1] for f in fields.values() for k in f})))
  fig.tight_layout()
  png = workdir_lib.path(out_dir) / "curves.png"
  save_png(fig, png, dpi=110)
  return png


def fig6_series(workdirs):
  """He et al. 2016 Fig. 6's data: {'plain' | 'residual': {model name: (train (epochs, errors), test (epochs,
  errors))}} for the runs with batch norm (config model.norm == 'batch')."""
  out = {"plain": {}, "residual": {}}
  for w in workdirs:
    cfg = workdir_lib.read_json(w / workdir_lib.CONFIG) or {}
    model = cfg.get("model", {})
    if model.get("norm") != "batch":
      continue
    es = workdir_lib.read_jsonl(w / M)
    test = curves(es, "eval", "top1", "epoch")
    out["residual" if model.get("residual") else "plain"][model["name"]] = (
        curves(es, "train", "error", "epoch"), (test[0], [1.0 - y for y in test[1]]))
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
    for i, (name, ((tx, ty), (ex, ey))) in enumerate(sorted(nets.items(), key=lambda kv: int(kv[0][6:] or 0))):
      color = plt.get_cmap("tab10").colors[i]
      label = name.replace("resnet", "plain-" if kind == "plain" else "ResNet-")
      ax.plot(tx, ty, color=color, linewidth=0.8, alpha=0.8)
      train = last_epoch_mean(tx, ty)
      figs = ", ".join(([f"train {train:.2%}"] if train is not None else []) + ([f"test {ey[-1]:.2%}"] if ey else []))
      ax.plot(ex, ey, color=color, linewidth=2.2, marker=".", label=f"{label} ({figs})" if figs else label)
    ax.set_title(f"{kind} nets: thin = training error, bold = test error")
    ax.set_xlabel("epoch")
    finals = [ys[-1] for nets in series.values() for (_, ty), (_, ey) in nets.values() for ys in (ty, ey) if ys]
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
  return {"steps": tr[-1]["step"] if tr else 0, "wall_min": tr[-1]["wall_s"] / 60 if tr and "wall_s" in tr[-1] else None,
          "train_loss": tr[-1]["loss"] if tr else None, "train_error": tr[-1]["error"] if tr else None,
          "top1": ev[-1]["top1"] if ev else None, "top5": ev[-1]["top5"] if ev else None,
          "best": (best["top1"], best["step"]) if best else None,
          "selected": (sel["eval"]["top1"], sel["step"]) if "eval" in sel else None}


def table(workdirs):
  names, _ = labels(workdirs)
  rows = ["| run | steps | wall (min) | final train loss | final train error | final test top-1 | final test top-5 | "
          "best test top-1 (step) | test top-1 at best dev (step) |", "|---|---|---|---|---|---|---|---|---|"]
  pair = lambda p: f"{p[0]:.4f} ({p[1]})" if p else "-"
  for w in workdirs:
    s = summary(w)
    rows.append(f"| {names[w]} | {s['steps']} | {_fmt(s['wall_min']) if s['wall_min'] else '-'} | "
                + " | ".join(_fmt(s[k]) if s[k] is not None else "-" for k in ("train_loss", "train_error", "top1", "top5"))
                + f" | {pair(s['best'])} | {pair(s['selected'])} |")
  return "\n".join(rows) + "\n"


def mean_table(workdirs, field: str):
  """Runs that differ only in config `field` (e.g. dataset.fold) as one row: mean +- sample sd of the test
  top-1 (at the best dev epoch where a dev split selects, else final), the number of runs and their wall time."""
  names, fields = labels(workdirs)
  groups = {}
  for w in workdirs:
    key = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in fields.get(w, {}).items() if k != field) or "all"
    groups.setdefault(key, []).append(w)
  rows = [f"| runs (over {field}) | n | test top-1 mean (at best dev, where selected) | sd | min | max | wall per run (min) |",
          "|---|---|---|---|---|---|---|"]
  for key, ws in groups.items():
    ss = [summary(w) for w in ws]
    acc = np.array([(s["selected"] or (s["top1"], 0))[0] for s in ss], np.float64)
    wall = [s["wall_min"] for s in ss if s["wall_min"]]
    sd = acc.std(ddof=1) if len(acc) > 1 else float("nan")
    rows.append(f"| {key} | {len(acc)} | {acc.mean():.4f} | {sd:.4f} | {acc.min():.4f} | {acc.max():.4f} | "
                f"{f'{np.mean(wall):.1f}' if wall else '-'} |")
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
    (workdir_lib.path(out) / "mean.md").write_text(mean_table(workdirs, a.mean_over))
    print(f"wrote {workdir_lib.path(out) / 'mean.md'}")
  if a.filters:
    for w in workdirs:
      if (w / "checkpoints").is_dir():
        print("wrote", viz.plot_workdir_filters(w, w / "filters.png"))


if __name__ == "__main__":
  cli.program(define_flags, run)
