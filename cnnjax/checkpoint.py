"""Checkpoints with Orbax: the train state and the data iterator's position, one step directory each.

`workdir/checkpoints/<step>/` holds `state` (Orbax StandardSave of the TrainState pytree) and `data` (Grain's
iterator state), saved together, so a resumed run sees exactly the batches an uninterrupted run would. Saving
is asynchronous; Orbax writes into `<step>.orbax-checkpoint-tmp` and renames it when complete, so a kill
mid-save leaves the previous step as the latest.

Restoring walks from the newest step to the oldest: a step that cannot be restored (truncated or missing
files, an empty directory) is reported and renamed `<step>.damaged-<n>` (kept for inspection, never deleted,
and invisible to Orbax so it cannot shadow the steps saved after it). A checkpoint whose parameters do not
match the model raises a ConfigError naming the differing parameters instead of falling back.
"""
import logging
import os
from typing import Any, Dict, Optional, Tuple

import flax
import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

from cnnjax.errors import ConfigError

log = logging.getLogger("cnnjax")


def _shapes(tree) -> Dict[str, tuple]:
  """{'params/stage1/.../kernel': shape} for a nested dict of arrays or array metadata."""
  flat = {}

  def visit(node, prefix):
    if isinstance(node, (list, tuple)):
      node = {str(i): v for i, v in enumerate(node)}
    if isinstance(node, dict):
      for k, v in node.items():
        visit(v, f"{prefix}/{k}" if prefix else str(k))
    elif hasattr(node, "shape"):
      flat[prefix] = tuple(node.shape)
  visit(tree, "")
  return flat


def describe_mismatch(saved: Dict[str, tuple], expected: Dict[str, tuple], limit: int = 8) -> Optional[str]:
  """A message listing parameters missing, unexpected or of another shape; None if they agree."""
  order = lambda k: (not k.startswith("params"), k)  # parameters first, then batch statistics
  missing = sorted(set(expected) - set(saved), key=order)
  extra = sorted(set(saved) - set(expected), key=order)
  shape = sorted((k for k in set(saved) & set(expected) if saved[k] != expected[k]), key=order)
  if not (missing or extra or shape):
    return None
  parts = []
  if missing:
    parts.append(f"{len(missing)} in the model but not in the checkpoint: {missing[:limit]}")
  if extra:
    parts.append(f"{len(extra)} in the checkpoint but not in the model: {extra[:limit]}")
  if shape:
    parts.append(f"{len(shape)} of another shape: " +
                 ", ".join(f"{k} checkpoint {saved[k]} vs model {expected[k]}" for k in shape[:limit]))
  return "; ".join(parts)


def _state_metadata(path: str):
  """The saved train state's tree of array metadata (shapes, dtypes), read without restoring anything."""
  with ocp.PyTreeCheckpointer() as ckptr:
    return ckptr.metadata(path).item_metadata.tree


class Manager:

  def __init__(self, directory: str, *, max_to_keep: int = 3, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           enable_async_checkpointing=async_save)
    self._mgr = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> Optional[int]:
    return self._mgr.latest_step()

  def all_steps(self):
    return sorted(self._mgr.all_steps())

  def save(self, step: int, state: Any, data_iterator: Any = None, *, force: bool = True) -> bool:
    items = {"state": ocp.args.StandardSave(state)}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    return self._mgr.save(int(step), args=ocp.args.Composite(**items), force=force)

  def _check_compatible(self, step: int, state_template: Any) -> None:
    """Raises ConfigError if step's saved parameters differ from the template's; errors reading the metadata
    are left to the restore (and so to the damaged-checkpoint fallback)."""
    keep = lambda tree: {k: tree[k] for k in ("params", "batch_stats") if k in tree}
    try:
      saved = _shapes(keep(dict(_state_metadata(os.path.join(self.directory, str(step), "state")))))
    except Exception:  # unreadable metadata: a damaged checkpoint, handled by restore's fallback
      return
    if not saved:
      return
    expected = _shapes(keep(flax.serialization.to_state_dict(state_template)))
    problem = describe_mismatch(saved, expected)
    if problem:
      raise ConfigError(f"checkpoint step {step} in {self.directory} does not fit this model: {problem}. "
                        f"Use another --workdir, or the config the checkpoint was written with.")

  def _quarantine(self, step: int) -> str:
    src = os.path.join(self.directory, str(step))
    n = 0
    while os.path.exists(dst := f"{src}.damaged-{n}"):
      n += 1
    if jax.process_index() == 0 and os.path.exists(src):
      os.rename(src, dst)
    self._mgr.reload()
    return dst

  def restore(self, state_template: Any, data_iterator: Any = None, step: Optional[int] = None
              ) -> Tuple[Optional[Any], Optional[int]]:
    """Restores the newest restorable step (or `step`) into the template's structure and shardings, and the
    data iterator in place. Returns (state, step), or (None, None) when no checkpoint restores; in that case
    the data iterator may have been moved and must be recreated."""
    steps = [step] if step is not None else sorted(self._mgr.all_steps(), reverse=True)
    for s in steps:
      self._check_compatible(s, state_template)
      items = {"state": ocp.args.StandardRestore(state_template)}
      if data_iterator is not None:
        items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
      try:
        restored = self._mgr.restore(s, args=ocp.args.Composite(**items))
      except Exception as e:  # Orbax reports damage as many types (KeyError, ValueError, NOT_FOUND, ...)
        moved = self._quarantine(s)
        log.warning("checkpoint step %d cannot be restored (%s: %s); moved it to %s and trying an older one",
                    s, type(e).__name__, str(e).splitlines()[0][:300] if str(e) else "", moved)
        continue
      log.info("restored checkpoint step %d from %s", s, self.directory)
      return restored["state"], s
    return None, None

  def wait(self) -> None:
    self._mgr.wait_until_finished()

  def close(self) -> None:
    self._mgr.close()


def load_numpy(directory: str, step: Optional[int] = None) -> Tuple[Dict[str, Any], int]:
  """The train state of a checkpoint as nested dicts of numpy arrays, on any machine (no template, no
  devices needed): for notebooks, tools and tests. `directory` is a workdir or its checkpoints/ folder."""
  if os.path.isdir(os.path.join(directory, "checkpoints")):
    directory = os.path.join(directory, "checkpoints")
  directory = os.path.abspath(directory)
  if step is None:
    steps = [int(d) for d in os.listdir(directory) if d.isdigit()] if os.path.isdir(directory) else []
    if not steps:
      raise FileNotFoundError(f"no checkpoint in {directory}")
    step = max(steps)
  path = os.path.join(directory, str(step), "state")
  meta = _state_metadata(path)
  with ocp.PyTreeCheckpointer() as ckptr:
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), meta)
    return ckptr.restore(path, args=ocp.args.PyTreeRestore(restore_args=restore_args)), step
