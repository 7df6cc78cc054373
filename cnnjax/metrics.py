"""Metrics: summarising step sums, and writing them to workdir/metrics.jsonl and TensorBoard.

metrics.jsonl holds one JSON object a line: {"step": int, "split": "train"|"eval", <metric>: float, ...}.
Each line is written whole and flushed; a reader skips a torn last line (a crash mid-write), and on resume
`Writer.truncate(step)` rewrites the file atomically without the entries after the restored step, so curves
never show a step twice. TensorBoard events come from tensorboardX, which needs no TensorFlow.
"""
import json
import math
import os
from typing import Dict, Iterable, List, Mapping

import numpy as np

SUM_KEYS = ("loss", "total_loss", "top1", "top5")


def summarize(step_metrics: Iterable[Mapping[str, np.ndarray]]) -> Dict[str, float]:
  """Combines per-step metric dicts: sums over examples become means, 'grad_norm' is averaged over steps,
  'learning_rate' is the last value. top1/top5 are accuracies; 'error' is 1 - top1."""
  step_metrics = list(step_metrics)
  if not step_metrics:
    return {}
  count = float(sum(float(m["count"]) for m in step_metrics))
  out: Dict[str, float] = {}
  for k in SUM_KEYS:
    if k in step_metrics[0]:
      out[k] = float(sum(float(m[k]) for m in step_metrics)) / max(count, 1.0)
  if "top1" in out:
    out["error"] = 1.0 - out["top1"]
  if "grad_norm" in step_metrics[0]:
    out["grad_norm"] = float(np.mean([float(m["grad_norm"]) for m in step_metrics]))
  if "learning_rate" in step_metrics[0]:
    out["learning_rate"] = float(step_metrics[-1]["learning_rate"])
  if "nonfinite_loss" in step_metrics[0]:
    out["nonfinite_steps"] = float(sum(bool(m["nonfinite_loss"]) or bool(m["nonfinite_grads"])
                                       for m in step_metrics))
  out["count"] = count
  return out


def read_jsonl(path: str) -> List[dict]:
  """All complete entries of a metrics.jsonl; a torn or garbled line is skipped."""
  entries = []
  if not os.path.exists(path):
    return entries
  with open(path) as f:
    for line in f:
      try:
        entries.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return entries


def write_json_atomic(path: str, obj) -> None:
  """Writes JSON to `path` through a temporary file and a rename: readers never see a partial file."""
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


class Writer:
  """Writes metrics of process 0 (others are no-ops) to metrics.jsonl and TensorBoard under `workdir`."""

  def __init__(self, workdir: str, *, enabled: bool = True, tensorboard: bool = True):
    self.enabled = enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if enabled:
      os.makedirs(workdir, exist_ok=True)
      if tensorboard:
        from tensorboardX import SummaryWriter
        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def truncate(self, step: int) -> None:
    """Drops entries after `step` (and torn lines): atomically, by writing a new file and renaming it."""
    if not self.enabled or not os.path.exists(self.path):
      return
    keep = [e for e in read_jsonl(self.path) if e.get("step", 0) <= step]
    tmp = self.path + ".tmp"
    with open(tmp, "w") as f:
      f.writelines(json.dumps(e) + "\n" for e in keep)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, self.path)

  def write(self, step: int, split: str, metrics: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    entry = {"step": int(step), "split": split}
    entry.update({k: (float(v) if math.isfinite(float(v)) else str(float(v))) for k, v in metrics.items()})
    with open(self.path, "a") as f:
      f.write(json.dumps(entry) + "\n")
      f.flush()
    if self._tb is not None:
      for k, v in metrics.items():
        self._tb.add_scalar(f"{split}/{k}", float(v), int(step))

  def flush(self) -> None:
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._tb = None
