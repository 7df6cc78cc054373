"""Image folders: `data_dir/<split>/<class>/**/<image>`, the layout of torchvision's ImageFolder.

Class names are the sorted subdirectory names of the training split (ImageFolder's order), so label k is the
k-th name; every other split must hold exactly the same classes. The source returns each file's encoded bytes;
`CheckedSource` decodes them per example inside the Grain pipeline (in its worker processes when
`dataset.num_workers > 0`) and the pipeline's transforms resize them: no decoded image is held in memory
(only on_bad_file='skip' decodes, and drops, each file once at start).

Bad files (`dataset.folder.on_bad_file`): a file without an image extension or whose contents PIL does not
recognise as an image stops the run with its path ('stop'), or is left out, counted and reported ('skip').
'stop' reads only each file's header at start (PNG chunk checksums included) and names the file if it later
fails to decode in the pipeline; 'skip' must know every bad file before the first batch, so that the source's
length and the batches stay fixed, and decodes each file once at start to find them.
"""
import concurrent.futures
import logging
import os
from typing import List, Optional

import numpy as np

from cnnjax.errors import BadFileError, ConfigError

log = logging.getLogger("cnnjax")

EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # torchvision's
ON_BAD_FILE = ("stop", "skip")


def _visible(names):
  return sorted(n for n in names if not n.startswith("."))


def split_dir(root: str, split: str) -> str:
  path = os.path.join(root, split)
  if not os.path.isdir(path):
    present = _visible(n for n in os.listdir(root) if os.path.isdir(os.path.join(root, n))) \
        if os.path.isdir(root) else []
    raise ConfigError(f"config.dataset.data_dir={root!r} has no split directory {split!r} (an image folder is "
                      f"data_dir/<split>/<class>/<image>); split directories present: {present}")
  return path


def class_names(root: str, split: str) -> List[str]:
  """The sorted class directory names of `split` (hidden ones such as .ipynb_checkpoints left out)."""
  path = split_dir(root, split)
  names = _visible(n for n in os.listdir(path) if os.path.isdir(os.path.join(path, n)))
  loose = _visible(n for n in os.listdir(path) if not os.path.isdir(os.path.join(path, n)))
  if loose:
    log.warning("%s: %d file(s) outside any class directory are not used: %s", path, len(loose), loose[:5])
  if not names:
    raise ConfigError(f"{path} holds no class directories (expected {path}/<class>/<image>)")
  return names


def check_file(path: str, decode: bool) -> Optional[str]:
  """Why `path` is not a usable image (None if it is): its extension, or PIL's error on its header (`decode`
  False; PIL's verify, which checks PNG checksums) or on decoding it fully (`decode` True)."""
  if not path.lower().endswith(EXTENSIONS):
    return f"not an image file extension (allowed: {', '.join(EXTENSIONS)})"
  from PIL import Image
  try:
    with Image.open(path) as im:
      im.load() if decode else im.verify()
  except Exception as e:  # PIL raises several types for damaged or foreign files
    return f"{type(e).__name__}: {e}"
  return None


def _files(class_dir: str) -> List[str]:
  out = []
  for parent, dirs, names in os.walk(class_dir, followlinks=True):
    dirs[:] = _visible(dirs)
    out += [os.path.join(parent, n) for n in _visible(names)]
  return sorted(out)


def scan(root: str, split: str, train_split: str, on_bad_file: str, num_threads: int = 4):
  """(paths, labels, bad) of `split`: the usable images, labelled by the position of their class among
  `train_split`'s classes, and the (path, reason) of each bad file. A class missing from either split is an
  error."""
  if on_bad_file not in ON_BAD_FILE:
    raise ConfigError(f"config.dataset.folder.on_bad_file={on_bad_file!r} is invalid: one of {ON_BAD_FILE}")
  classes, here = class_names(root, train_split), class_names(root, split)
  missing, extra = sorted(set(classes) - set(here)), sorted(set(here) - set(classes))
  if missing or extra:
    problems = ([f"split {split!r} lacks class(es) {missing} of split {train_split!r}"] if missing else []) + (
        [f"split {train_split!r} lacks class(es) {extra} of split {split!r}"] if extra else [])
    raise ConfigError(f"image folder {root}: {'; '.join(problems)}. Every split needs the same class directories")
  paths, labels = [], []
  for label, name in enumerate(classes):
    files = _files(os.path.join(root, split, name))
    paths += files
    labels += [label] * len(files)
  with concurrent.futures.ThreadPoolExecutor(max(1, num_threads)) as pool:
    reasons = list(pool.map(lambda p: check_file(p, decode=on_bad_file == "skip"), paths))
  bad = [(p, r) for p, r in zip(paths, reasons) if r]
  if bad and on_bad_file == "stop":
    listing = "; ".join(f"{p}: {r}" for p, r in bad[:5])
    raise BadFileError(f"{len(bad)} bad file(s) in split {split!r} of {root}: {listing}. Remove them, or set "
                       f"config.dataset.folder.on_bad_file='skip' to leave them out")
  if bad:
    log.warning("image folder %s split %r: skipped %d bad file(s) of %d; first: %s", root, split, len(bad),
                len(paths), "; ".join(f"{p} ({r})" for p, r in bad[:5]))
  keep = [i for i, r in enumerate(reasons) if not r]
  kept_labels = np.asarray(labels, np.int32)[keep]
  empty = [classes[k] for k in range(len(classes)) if not np.any(kept_labels == k)]
  if empty:
    raise ConfigError(f"image folder {root}: split {split!r} has no usable images of classes {empty}")
  return [paths[i] for i in keep], kept_labels, bad


class FolderSource:
  """Random access to image files: records {'image': encoded bytes, 'label': int}; `example_path(i)` names
  example i's file (for error messages)."""

  def __init__(self, paths, labels):
    self.paths, self.labels = list(paths), np.asarray(labels, np.int32)

  def __len__(self):
    return len(self.paths)

  def __getitem__(self, i):
    with open(self.paths[i], "rb") as f:
      return {"image": f.read(), "label": int(self.labels[i])}

  def example_path(self, i) -> str:
    return self.paths[i]

  def __repr__(self):
    return f"FolderSource(n={len(self)})"

