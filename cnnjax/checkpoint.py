"""Checkpoints with Orbax: the train state, one step directory each, local or on a bucket.

`<workdir>/checkpoints/<step>/state` holds the TrainState pytree (Orbax StandardSave). The data position is not
saved: the training stream is a deterministic function of the seed and the step (cnnjax.data.train_dataset's
`start_step`), so a resumed run sees exactly the batches an uninterrupted one would, whatever its number of
worker processes. Saving is asynchronous; Orbax finalises a step only when it is complete, so a kill mid-save
leaves the previous step as the latest.

Each step this process saves is sealed once Orbax has finalised it: `<step>/files.json` records every file's
size and CRC-32. Restoring walks from the newest step to the oldest and decides from the files what is damage:
- damage: an empty step directory, no `state/`, or, in a sealed step, a file missing, of another size or with
  another checksum (truncated, deleted, zero-filled, bit-flipped); in a step without a seal (written by an
  older version, or killed between finalising and sealing) an empty file, unreadable metadata, a missing
  manifest, or a restore that fails other than with an OS error. The step is renamed `<step>.damaged-<n>`
  (kept, never deleted, invisible to Orbax) and the next older one tried; with several processes they first
  agree that it is damaged, and process 0 renames it before anyone goes on;
- anything else (a permission or other I/O error, a sealed step whose files are intact yet do not restore,
  parameters that do not fit the model): `RestoreError` or `ConfigError` naming the step, the cause and the
  fix; nothing is renamed.
"""
import json
import logging
import zlib
from typing import Any, Dict, List, Optional, Tuple

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from cnnjax import workdir as workdir_lib
from cnnjax.errors import ConfigError, RestoreError

log = logging.getLogger("cnnjax")

SEAL = "files.json"  # in a step directory: {path relative to it: [size, crc32]} of every file, once finalised


def shapes(tree) -> Dict[str, tuple]:
  """{'params/stage1/.../kernel': shape} for a pytree of arrays or array metadata."""
  flat = flax.traverse_util.flatten_dict(flax.serialization.to_state_dict(tree), sep="/")
  return {k: tuple(v.shape) for k, v in flat.items() if hasattr(v, "shape")}


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


def _state_metadata(path):
  """The saved train state's tree of array metadata (shapes, dtypes), read without restoring anything."""
  with ocp.PyTreeCheckpointer() as ckptr:
    return ckptr.metadata(epath.Path(path)).item_metadata.tree


def _files(d):
  """Every file below `d` (epath has no recursive glob for buckets)."""
  for p in d.iterdir():
    if p.is_dir():
      yield from _files(p)
    else:
      yield p


def _crc32(f) -> int:
  crc = 0
  with f.open("rb") as fh:
    while chunk := fh.read(1 << 24):
      crc = zlib.crc32(chunk, crc)
  return crc


def seal(step_dir) -> None:
  """Records the size and CRC-32 of every file of a finalised step in `<step>/files.json`."""
  step_dir = epath.Path(step_dir)
  files = {str(f.relative_to(step_dir)): [f.stat().length, _crc32(f)] for f in _files(step_dir) if f.name != SEAL}
  workdir_lib.write_json(step_dir / SEAL, files)


def _sealed_damage(step_dir, record) -> Optional[str]:
  """How the files differ from their seal, or None."""
  for rel, (size, crc) in sorted(record.items()):
    f = step_dir / rel
    if not f.exists():
      return f"missing file {rel}"
    if f.stat().length != size:
      return f"{rel} has {f.stat().length} bytes, {size} when saved"
    if _crc32(f) != crc:
      return f"{rel} differs from what was saved (CRC-32)"
  return None


def _unsealed_damage(state) -> Optional[str]:
  """What the files of an unsealed step show: empty files, unreadable JSON, no manifest or metadata."""
  for f in _files(state):
    if f.stat().length == 0:
      return f"empty file {f}"
    if f.name.startswith("_") and "METADATA" in f.name or f.suffix == ".json":
      try:
        json.loads(f.read_text())
      except (ValueError, UnicodeDecodeError) as e:
        return f"unreadable metadata {f} ({e})"
  if not (state / "manifest.ocdbt").exists():
    return f"no manifest.ocdbt in {state}"
  try:
    if _state_metadata(state) is None:
      return f"no array metadata in {state}"
  except (PermissionError, ConfigError):
    raise
  except Exception as e:  # pylint: disable=broad-except
    if isinstance(e, OSError) and not isinstance(e, FileNotFoundError):
      raise
    return f"unreadable metadata in {state} ({type(e).__name__})"
  return None


def damage(step_dir) -> Optional[str]:
  """Why the files of a step directory are damaged, or None where they look whole (see the module's docstring):
  sizes and checksums against the seal, else sizes, the metadata files and a metadata read."""
  step_dir = epath.Path(step_dir)
  if not step_dir.exists() or not list(step_dir.iterdir()):
    return "empty step directory"
  state = step_dir / "state"
  if not state.exists():
    return "no state/ in the step directory"
  if (step_dir / SEAL).exists():
    try:
      record = json.loads((step_dir / SEAL).read_text())
    except (ValueError, UnicodeDecodeError) as e:
      return f"unreadable {SEAL} ({e})"
    return _sealed_damage(step_dir, record)
  return _unsealed_damage(state)


def _is_damage(e: BaseException, sealed: bool) -> bool:
  """Whether a restore error of a step that passed `damage` still means damage: never for a sealed step (its
  files are as saved) or an OS error other than a missing file (permissions, I/O, network: fix and rerun)."""
  if sealed or isinstance(e, ConfigError):
    return False
  return isinstance(e, FileNotFoundError) or not isinstance(e, OSError)


def _agree(code: int) -> int:
  """The worst of every process's code (0 restored, 1 damaged, 2 another error): processes act alike."""
  if jax.process_count() == 1:
    return code
  from jax.experimental import multihost_utils
  return int(np.max(multihost_utils.process_allgather(np.int32(code))))


class Manager:

  def __init__(self, directory, *, max_to_keep: int = 3, async_save: bool = True):
    self.directory = workdir_lib.path(directory)
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           enable_async_checkpointing=async_save)
    self._mgr = ocp.CheckpointManager(self.directory, options=options)
    self.quarantined: List[str] = []
    self._unsealed: List[int] = []  # steps saved by this manager, not yet sealed

  def latest_step(self) -> Optional[int]:
    return self._mgr.latest_step()

  def all_steps(self):
    return sorted(self._mgr.all_steps())

  def save(self, step: int, state: Any, *, force: bool = True) -> bool:
    self.wait()  # Orbax waits for the previous save anyway; sealing it costs one read of its files
    saved = self._mgr.save(int(step), args=ocp.args.Composite(state=ocp.args.StandardSave(state)), force=force)
    if saved:
      self._unsealed.append(int(step))
    return saved

  def _seal_finished(self) -> None:
    """Seals the finalised steps this manager saved (process 0; steps deleted by max_to_keep are skipped)."""
    steps, self._unsealed = self._unsealed, []
    if jax.process_index() != 0:
      return
    kept = set(self._mgr.all_steps())
    for step in steps:
      if step in kept:
        seal(self.directory / str(step))

  def _check_compatible(self, step: int, state_template: Any) -> None:
    """Raises ConfigError if step's saved parameters differ from the template's."""
    keep = lambda tree: {k: tree[k] for k in ("params", "batch_stats") if k in tree}
    saved = shapes(keep(dict(_state_metadata(self.directory / str(step) / "state"))))
    problem = describe_mismatch(saved, shapes(keep(flax.serialization.to_state_dict(state_template))))
    if saved and problem:
      raise ConfigError(f"checkpoint step {step} in {self.directory} does not fit this model: {problem}. "
                        f"Use another --workdir, the config the checkpoint was written with, or --restart.")

  def _quarantine(self, step: int, why: str) -> None:
    """Renames a damaged step (process 0), then every process waits for that before going on."""
    src = self.directory / str(step)
    n = 0
    while (dst := self.directory / f"{step}.damaged-{n}").exists():
      n += 1
    if jax.process_index() == 0 and src.exists():
      src.rename(dst)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices(f"cnnjax quarantine {step}")
    self._mgr.reload()
    self.quarantined.append(str(dst))
    log.warning("checkpoint step %d cannot be restored (%s); moved it to %s and trying an older one",
                step, why, dst)

  def _restore_step(self, step: int, state_template: Any) -> Tuple[int, Any, str]:
    """(code, state, why): code 0 restored, 1 damaged, 2 another error (see _agree)."""
    why = damage(self.directory / str(step))
    if why:
      return 1, None, why
    try:
      self._check_compatible(step, state_template)
      restored = self._mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(state_template)))
    except ConfigError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      why = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
      return (1 if _is_damage(e, (self.directory / str(step) / SEAL).exists()) else 2), None, why
    return 0, restored["state"], ""

  def restore(self, state_template: Any, step: Optional[int] = None) -> Tuple[Optional[Any], Optional[int]]:
    """Restores the newest restorable step (or `step`) into the template's structure and shardings.
    Returns (state, step), or (None, None) when no step restores (damaged ones are in `quarantined`)."""
    for s in [step] if step is not None else sorted(self._mgr.all_steps(), reverse=True):
      code, state, why = self._restore_step(s, state_template)
      code = _agree(code)
      if code == 2:
        raise RestoreError(
            f"checkpoint step {s} in {self.directory} could not be read: {why or 'on another process'}. This "
            f"is not damage to its files, so nothing was moved: fix the cause (permissions, storage, "
            f"credentials) and run the same command again.")
      if code == 1:
        self._quarantine(s, why or "damaged on another process")
        continue
      log.info("restored checkpoint step %d from %s", s, self.directory)
      return state, s
    return None, None

  def wait(self) -> None:
    self._mgr.wait_until_finished()
    self._seal_finished()

  def close(self) -> None:
    self._mgr.close()


def load_numpy(directory, step: Optional[int] = None) -> Tuple[Dict[str, Any], int]:
  """The train state of a checkpoint as nested dicts of numpy arrays, on any machine (no template, no
  devices needed): for notebooks, tools and tests. `directory` is a workdir or its checkpoints/ folder."""
  directory = workdir_lib.path(directory)
  if (directory / "checkpoints").is_dir():
    directory = directory / "checkpoints"
  if step is None:
    steps = [int(d.name) for d in directory.iterdir() if d.name.isdigit()] if directory.is_dir() else []
    if not steps:
      raise FileNotFoundError(f"no checkpoint in {directory}")
    step = max(steps)
  path = directory / str(step) / "state"
  meta = _state_metadata(path)
  with ocp.PyTreeCheckpointer() as ckptr:
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), meta)
    return ckptr.restore(path, args=ocp.args.PyTreeRestore(restore_args=restore_args)), step
