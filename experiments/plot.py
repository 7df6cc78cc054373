"""Learning curves and a results table for any set of workdirs.

  python -m experiments.plot runs/ablation [more workdirs or parents ...] [--out DIR] [--x epoch|step]

Writes DIR/curves.png (training loss on a log scale, training error, test top-1 and top-5 error; one line
per run, labelled by the config fields that differ between the runs) and DIR/results.md (final and best
metrics per run). DIR defaults to the first argument. With --filters, each workdir also gets filters.png, the
first convolution's filters of its newest checkpoint.
"""
import argparse
import io
import json
import sys

import flax

from cnnjax import viz
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


def save_png(fig, path, dpi=100) -> None:
  """Saves and closes a matplotlib figure at `path`, local or a URL."""
  import matplotlib.pyplot as plt
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=dpi)
  plt.close(fig)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(buf.getvalue())


def table(workdirs):
  names, _ = labels(workdirs)
  rows = ["| run | steps | final train loss | final train error | final test top-1 | final test top-5 | "
          "best test top-1 (step) |", "|---|---|---|---|---|---|---|"]
  for w in workdirs:
    es = workdir_lib.read_jsonl(w / M)
    tr = [e for e in es if e["split"] == "train"]
    ev = [e for e in es if e["split"] == "eval" and isinstance(e.get("top1"), (int, float))]
    fmt = lambda v: f"{v:.4f}" if isinstance(v, (int, float)) else str(v)
    best = max(ev, key=lambda e: e["top1"]) if ev else None
    rows.append(f"| {names[w]} | {tr[-1]['step'] if tr else 0} | {fmt(tr[-1]['loss']) if tr else '-'} | "
                f"{fmt(tr[-1]['error']) if tr else '-'} | {fmt(ev[-1]['top1']) if ev else '-'} | "
                f"{fmt(ev[-1]['top5']) if ev else '-'} | "
                f"{fmt(best['top1']) + ' (' + str(best['step']) + ')' if best else '-'} |")
  return "\n".join(rows) + "\n"


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("paths", nargs="+", help="workdirs, or folders holding workdirs")
  p.add_argument("--out", default=None, help="output folder (default: the first path)")
  p.add_argument("--x", default="epoch", choices=("epoch", "step"))
  p.add_argument("--filters", action="store_true", help="also write each run's first-layer filters as filters.png")
  a = p.parse_args(argv)
  workdirs = find_workdirs(a.paths)
  if not workdirs:
    raise SystemExit(f"error: no workdirs with metrics.jsonl under {a.paths}")
  out = a.out or a.paths[0]
  png = plot(workdirs, out, a.x)
  md = workdir_lib.path(out) / "results.md"
  md.write_text(table(workdirs))
  print(f"wrote {png} and {md} ({len(workdirs)} runs)")
  if a.filters:
    for w in workdirs:
      if (w / "checkpoints").is_dir():
        print("wrote", viz.plot_workdir_filters(w, w / "filters.png"))


if __name__ == "__main__":
  main(sys.argv[1:])
