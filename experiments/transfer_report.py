"""Table and figure of the transfer experiment (configs/transfer.py) from its runs' final_metrics.json.

  python -m experiments.transfer_report --runs /work/runs/transfer --out docs/transfer_results

Reads <runs>/<target>_<method>/<run>/final_metrics.json and config.json, averages the test top-1 over the label
subsets (dataset.subset_seed) of each (target, method, labels per class), and writes <out>.md (a markdown table:
mean ± sample standard deviation, and the number of subsets) and <out>.png (accuracy against labels per class,
one line per method, one panel per target).
"""
import collections
import os
from typing import Dict, List, Tuple

import numpy as np
from absl import flags

from cnnjax import cli
from cnnjax import workdir as workdir_lib
from configs import transfer

LABELS = {"scratch": "from scratch", "probe": "linear probe", "finetune": "fine-tune all",
          "frozen": "fine-tune, stem + stages 1-2 frozen"}
TARGET_NAMES = {"fashion": "Fashion-MNIST classes 5-9", "digits": "digits (10 classes)"}


def collect(runs: str) -> Dict[Tuple[str, str, int], List[float]]:
  """{(target, method, labels per class or -1): [test top-1 of each finished subset]}."""
  out = collections.defaultdict(list)
  for preset in transfer.PRESETS:
    parent = os.path.join(runs, preset)
    if not os.path.isdir(parent):
      continue
    for name in sorted(os.listdir(parent)):
      final = workdir_lib.read_json(workdir_lib.path(os.path.join(parent, name, workdir_lib.FINAL)))
      config = workdir_lib.read_json(workdir_lib.path(os.path.join(parent, name, workdir_lib.CONFIG)))
      if final is None or config is None:
        continue
      target, method = preset.split("_")
      out[(target, method, config["dataset"]["train_per_class"])].append(final["eval"]["top1"])
  return out


def _budgets(results):
  return sorted({k for _, _, k in results}, key=lambda k: (k == -1, k))


def table(results) -> str:
  budgets = _budgets(results)
  head = "| target | method | " + " | ".join("all" if k == -1 else f"{k} / class" for k in budgets) + " |"
  lines = [head, "|" + "---|" * (2 + len(budgets))]
  for target in transfer.TARGETS:
    for method in transfer.METHODS:
      cells = []
      for k in budgets:
        v = results.get((target, method, k), [])
        if not v:
          cells.append("–")
        elif len(v) == 1:
          cells.append(f"{100 * v[0]:.1f}")
        else:
          cells.append(f"{100 * np.mean(v):.1f} ± {100 * np.std(v, ddof=1):.1f} (n={len(v)})")
      lines.append(f"| {TARGET_NAMES[target]} | {LABELS[method]} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def figure(results, path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  budgets = _budgets(results)
  xs = np.arange(len(budgets))
  fig, axes = plt.subplots(1, len(transfer.TARGETS), figsize=(11, 4), sharey=True)
  for ax, target in zip(axes, transfer.TARGETS):
    for method in transfer.METHODS:
      pts = [(x, results[(target, method, k)]) for x, k in zip(xs, budgets) if results.get((target, method, k))]
      if not pts:
        continue
      x = [p[0] for p in pts]
      mean = [100 * np.mean(p[1]) for p in pts]
      spread = [100 * np.std(p[1], ddof=1) if len(p[1]) > 1 else 0.0 for p in pts]
      ax.errorbar(x, mean, yerr=spread, marker="o", capsize=3, label=LABELS[method])
    ax.set_xticks(xs, ["all" if k == -1 else str(k) for k in budgets])
    ax.set_xlabel("labelled training examples per class")
    ax.set_title(TARGET_NAMES[target])
    ax.grid(alpha=0.3)
  axes[0].set_ylabel("test top-1 (%)")
  axes[-1].legend(loc="lower right", fontsize=8)
  fig.suptitle("Transfer from a ResNet-20 trained on Fashion-MNIST classes 0-4 (mean ± std over label subsets)")
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def define_flags(fv: flags.FlagValues) -> flags.FlagValues:
  flags.DEFINE_string("runs", None, "the folder holding <target>_<method>/<run>/ workdirs", flag_values=fv)
  flags.DEFINE_string("out", None, "a path without extension: writes <out>.md and <out>.png", flag_values=fv)
  flags.mark_flags_as_required(["runs", "out"], flag_values=fv)
  return fv


def main(argv=None) -> None:
  """The command on `argv` (without the program name), as a function."""
  return cli.call(define_flags, run, argv)


def run(args, rest) -> None:
  if rest:
    raise SystemExit(f"error: unexpected arguments {rest}")
  results = collect(args.runs)
  text = table(results)
  with open(args.out + ".md", "w") as f:
    f.write(text + "\n")
  figure(results, args.out + ".png")
  print(text)


if __name__ == "__main__":
  cli.program(define_flags, run)
