"""Checkpoints with Orbax: the train state and the data iterator's position, one step directory each.

`workdir/checkpoints/<step>/` holds `state` (Orbax StandardSave of the TrainState pytree) and `data` (Grain's
iterator state), saved together, so a resumed run sees exactly the batches an uninterrupted run would. Saving
is asynchronous; Orbax writes into a temporary directory and renames it when complete, so a kill mid-save
leaves the previous step as the latest.
"""
import logging
import os
from typing import Any, Optional, Tuple

import grain
import orbax.checkpoint as ocp

log = logging.getLogger("cnnjax")


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

  def restore(self, state_template: Any, data_iterator: Any = None, step: Optional[int] = None
              ) -> Tuple[Optional[Any], Optional[int]]:
    """Restores `step` (default: the newest) into the template's structure and shardings, and the data
    iterator in place. Returns (state, step), or (None, None) when there is no checkpoint."""
    step = self._mgr.latest_step() if step is None else step
    if step is None:
      return None, None
    items = {"state": ocp.args.StandardRestore(state_template)}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    restored = self._mgr.restore(step, args=ocp.args.Composite(**items))
    log.info("restored checkpoint step %d from %s", step, self.directory)
    return restored["state"], step

  def wait(self) -> None:
    self._mgr.wait_until_finished()

  def close(self) -> None:
    self._mgr.close()
