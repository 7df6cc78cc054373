"""A run's workdir and the files in it, local or on a bucket (`gs://...`), all through `etils.epath`.

    <workdir>/config.json         the config that ran (plus what was resolved at run time)
    <workdir>/metrics.jsonl       one JSON object a line: {"step", "split", <metric>: float, ...}
    <workdir>/tensorboard/        event files
    <workdir>/checkpoints/<step>/ Orbax
    <workdir>/final_metrics.json  written once the last step is reached
    <workdir>/conv_impls.json     the convolution implementation each layer resolved to
    <workdir>/preprocessing.json  the normalisation of a pretrained init (transfer runs)
    <workdir>/class_names.json    what each label means (data sets that name their classes)
    <workdir>/vocab.json          the text vocabulary the run started with (text data sets)
    <workdir>/eval/<split>_<step>.json   evaluation-only results (`--mode=eval`)
    <workdir>/lock.json           who is running in this workdir now (see `Lock`)
    <workdir>/previous/<n>/       earlier attempts moved aside by `--restart`, kept

`ATTEMPT` lists every name an attempt writes; `--restart` moves exactly those aside, and everything that writes
into a workdir takes its name from here.

URLs are never turned into local paths. JSON files are replaced whole (a reader never sees half a file);
metrics.jsonl is appended line by line where the file system can append (a reader skips a torn last line)
and rewritten whole where it cannot (object stores).
"""
import json
import math
import os
import socket
import threading
import time
from typing import Any, Dict, List, Mapping, Optional

from etils import epath

from cnnjax.errors import ConfigError, WorkdirBusyError

CONFIG = "config.json"
METRICS = "metrics.jsonl"
FINAL = "final_metrics.json"
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"
EVAL = "eval"
CONV_IMPLS = "conv_impls.json"
PREPROCESSING = "preprocessing.json"
CLASS_NAMES = "class_names.json"
VOCAB = "vocab.json"
LOCK = "lock.json"
PREVIOUS = "previous"
# What one attempt writes (all but the lock and earlier attempts): what `--restart` moves aside.
ATTEMPT = (CONFIG, METRICS, FINAL, CHECKPOINTS, TENSORBOARD, EVAL, CONV_IMPLS, PREPROCESSING, CLASS_NAMES, VOCAB)

# The package each bucket scheme needs for etils.epath, and how to install it.
_BUCKET_EXTRAS = {"gs": "pip install -e '.[gcs]' (gcsfs for epath, google-cloud-storage for Orbax)",
                  "s3": "pip install s3fs", "az": "pip install adlfs"}


def path(p) -> epath.Path:
  """`p` as an epath.Path: URLs stay URLs, local paths become absolute."""
  s = os.fspath(p)
  return epath.Path(s if is_url(s) else os.path.abspath(os.path.expanduser(s)))


def is_url(p) -> bool:
  return "://" in os.fspath(p)


def check(workdir) -> epath.Path:
  """`workdir` as a path (see `path`), or ConfigError naming it, the cause and the fix when it cannot hold a run:
  an existing file, a path inside a file, a bucket scheme whose file-system package is missing. Creates nothing
  (a folder that cannot be created is reported by `make`)."""
  s = os.fspath(workdir)
  if is_url(s):
    scheme = s.split("://", 1)[0]
    try:
      epath.Path(s).exists()
    except ImportError as e:
      fix = _BUCKET_EXTRAS.get(scheme, "install the fsspec package for this scheme")
      raise ConfigError(f"--workdir {s}: {scheme}:// needs a package that is not installed ({e}). "
                        f"Fix: {fix}.") from None
    except KeyError:
      raise ConfigError(f"--workdir {s}: unknown scheme {scheme}://; etils.epath reads local paths and "
                        f"{', '.join(f'{k}://' for k in _BUCKET_EXTRAS)}") from None
    return path(s)
  p = path(s)
  for q in [p, *p.parents]:
    if q.exists():
      if not q.is_dir():
        where = "is an existing file" if q == p else f"lies inside the file {q}"
        raise ConfigError(f"--workdir {p} {where}, not a folder. Use another --workdir.")
      break
  return p


def make(workdir) -> None:
  """Creates the workdir (and its parents), or ConfigError naming it and why it cannot be created."""
  try:
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise ConfigError(f"--workdir {workdir} cannot be created: {e.strerror or e}"
                      f"{f' ({e.filename})' if e.filename else ''}. Use a path in a folder you can write to.") from None


def write_json(p, obj) -> None:
  """Writes JSON to `p` through a temporary file and a rename: readers never see a partial file."""
  p = epath.Path(p)
  p.parent.mkdir(parents=True, exist_ok=True)
  tmp = p.parent / f"{p.name}.tmp-{os.getpid()}"
  tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
  tmp.replace(p)


def read_json(p) -> Optional[Any]:
  p = epath.Path(p)
  return json.loads(p.read_text()) if p.exists() else None


def read_jsonl(p) -> List[dict]:
  """All complete entries of a JSON-lines file; a torn or garbled line is skipped."""
  p = epath.Path(p)
  if not p.exists():
    return []
  entries = []
  for line in p.read_text().splitlines():
    try:
      entries.append(json.loads(line))
    except json.JSONDecodeError:
      continue
  return entries


def _jsonable(metrics: Mapping[str, float]) -> Dict[str, Any]:
  return {k: (float(v) if math.isfinite(float(v)) else str(float(v))) for k, v in metrics.items()}


class MetricsWriter:
  """metrics.jsonl and TensorBoard events of process 0 (other processes' writers do nothing)."""

  def __init__(self, workdir, *, enabled: bool = True, tensorboard: bool = True):
    self.enabled = enabled
    self.path = epath.Path(workdir) / METRICS
    self._lines: Optional[List[str]] = None  # the whole file, kept where appending is impossible
    self._tb = None
    if enabled and tensorboard:
      from tensorboardX import SummaryWriter
      _register_tensorboard_urls()
      self._tb = SummaryWriter(os.fspath(epath.Path(workdir) / TENSORBOARD))

  def truncate(self, step: int) -> None:
    """Drops the entries after `step` (and torn lines), replacing the file whole: on resume, the steps that
    will be trained again. Nothing at or before `step` is ever removed."""
    if not self.enabled:
      return
    keep = [json.dumps(e) for e in read_jsonl(self.path) if e.get("step", 0) <= step]
    if is_url(self.path):
      self._lines = keep
    if self.path.exists():
      tmp = self.path.parent / f"{METRICS}.tmp-{os.getpid()}"
      tmp.write_text("".join(line + "\n" for line in keep))
      tmp.replace(self.path)

  def write(self, step: int, split: str, metrics: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    line = json.dumps({"step": int(step), "split": split, **_jsonable(metrics)})
    if is_url(self.path):  # object stores cannot append: rewrite the object (replaced whole)
      if self._lines is None:
        self._lines = [json.dumps(e) for e in read_jsonl(self.path)]
      self._lines.append(line)
      self.path.write_text("".join(x + "\n" for x in self._lines))
    else:
      with open(self.path, "a") as f:
        f.write(line + "\n")
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


class _EpathRecordFile:
  """tensorboardX record writer for URLs: buffers and writes the object whole on flush (object stores cannot
  append)."""

  def __init__(self, p):
    self.path, self.data = epath.Path(p), bytearray()

  def write(self, b):
    self.data += b

  def flush(self):
    self.path.write_bytes(bytes(self.data))

  def close(self):
    self.flush()


class _EpathRecordFactory:
  def open(self, p):
    return _EpathRecordFile(p)

  def directory_check(self, p):
    epath.Path(p).mkdir(parents=True, exist_ok=True)


def _register_tensorboard_urls() -> None:
  from tensorboardX import record_writer
  for prefix in ("gs", "s3", "az"):  # epath instead of tensorboardX's own cloud clients
    record_writer.register_writer_factory(prefix, _EpathRecordFactory())


def move_aside(workdir) -> Optional[epath.Path]:
  """`--restart`: moves the previous attempt's files into previous/<n>/ (kept, never deleted); returns where,
  or None when there was nothing to move."""
  workdir = epath.Path(workdir)
  names = [n for n in ATTEMPT if (workdir / n).exists()]
  if not names:
    return None
  n = 0
  while (workdir / PREVIOUS / str(n)).exists():
    n += 1
  dst = workdir / PREVIOUS / str(n)
  dst.mkdir(parents=True)
  for name in names:
    (workdir / name).rename(dst / name)
  return dst


class Lock:
  """One run per workdir: `<workdir>/lock.json` names the holder (host, pid, start time).

  Local file systems: an exclusive `flock` on the file, which the kernel releases when the holder dies, so a
  lock left by a dead process is taken over (with a warning naming it). Buckets have no locks: the holder
  writes the file and refreshes its `heartbeat` every `heartbeat_s`; a lock whose heartbeat is older than
  `stale_s` counts as left by a dead process. Two launches within the same second on a bucket can both win
  (there is no atomic create-if-absent through epath); everything else is refused.
  """

  def __init__(self, workdir, *, heartbeat_s: float = 60.0, stale_s: float = 300.0):
    self.path = epath.Path(workdir) / LOCK
    self.heartbeat_s, self.stale_s = heartbeat_s, stale_s
    self.previous: Optional[dict] = None  # a dead holder's record, when the lock was taken over
    self._fd = None
    self._stop = threading.Event()
    self._thread = None
    self.info = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}

  def acquire(self) -> "Lock":
    make(self.path.parent)
    (self._acquire_url if is_url(self.path) else self._acquire_local)()
    return self

  def _busy(self, holder: dict) -> WorkdirBusyError:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return WorkdirBusyError(
        f"{self.path.parent} is in use by pid {holder.get('pid')} on {holder.get('host')} (running since "
        f"{since}). One run per workdir: wait for it, stop it, or use another --workdir.")

  def _acquire_local(self) -> None:
    import fcntl
    self._fd = os.open(os.fspath(self.path), os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _parse(os.pread(self._fd, 4096, 0))
      os.close(self._fd)
      self._fd = None
      raise self._busy(holder or {}) from None
    self.previous = _parse(os.pread(self._fd, 4096, 0))  # non-empty: its holder died without releasing
    os.ftruncate(self._fd, 0)
    os.pwrite(self._fd, json.dumps(self.info).encode(), 0)

  def _acquire_url(self) -> None:
    holder = read_json(self.path) if self.path.exists() else None
    if holder and time.time() - holder.get("heartbeat", 0) < self.stale_s:
      raise self._busy(holder)
    self.previous = holder
    self._beat()
    if (read_json(self.path) or {}).get("pid") != self.info["pid"]:  # another launch wrote after us
      raise self._busy(read_json(self.path) or {})
    self._thread = threading.Thread(target=self._heartbeat, daemon=True)
    self._thread.start()

  def _beat(self) -> None:
    write_json(self.path, {**self.info, "heartbeat": time.time()})  # replaced whole: never read half-written

  def _heartbeat(self) -> None:
    while not self._stop.wait(self.heartbeat_s):
      self._beat()

  def release(self) -> None:
    """Empties (local) or removes (bucket) the lock file: a clean exit leaves no holder behind."""
    if self._fd is not None:
      os.ftruncate(self._fd, 0)
      os.close(self._fd)  # closing releases the flock
      self._fd = None
    if self._thread is not None:
      self._stop.set()
      self._thread.join()
      self._thread = None
      self.path.unlink(missing_ok=True)

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()


def remove_if_unused(workdir) -> None:
  """Removes `workdir` when it holds nothing but a released (empty or absent) lock file: what a launch that
  created it and then failed before writing anything leaves behind, so a failed first launch leaves no trace."""
  workdir = epath.Path(workdir)
  try:
    names = [p.name for p in workdir.iterdir()]
    if set(names) <= {LOCK} and not (names and (workdir / LOCK).read_bytes().strip()):
      (workdir / LOCK).unlink(missing_ok=True)
      workdir.rmdir()
  except OSError:  # gone already, or another launch wrote there meanwhile: leave it
    pass


def _parse(raw: bytes) -> Optional[dict]:
  try:
    return json.loads(raw.decode()) if raw.strip() else None
  except (json.JSONDecodeError, UnicodeDecodeError):
    return None


def field_label(key: str, keys) -> str:
  """A config field's last component ('alpha'), or its full path where another of `keys` ends the same way
  ('mixup.alpha', 'cutmix.alpha'): the one rule for sweep run names and plot labels."""
  last = key.split(".")[-1]
  return last if sum(k.split(".")[-1] == last for k in keys) == 1 else key
