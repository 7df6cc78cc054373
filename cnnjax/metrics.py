"""Metrics maths: step sums (exact under padding and sharding) summarised as means. Writing them to the
workdir is cnnjax.workdir's job."""
from typing import Dict, Iterable, Mapping

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
