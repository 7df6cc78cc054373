"""MNIST's IDX file format, read with numpy (LeCun et al.'s format, also used by Fashion-MNIST).

An IDX file is 4 magic bytes (0, 0, type code, number of dimensions), one big-endian uint32 per dimension, then
the values in C order. Image files are 0x00000803 (uint8, 3 dimensions: count, rows, columns), label files
0x00000801 (uint8, 1 dimension: count). Files may be gzipped (as distributed) or not; gzip is recognised by its
own magic bytes, not by the name.
"""
import gzip
import os
import zlib
from typing import Dict, Tuple

import numpy as np

from cnnjax.errors import IdxError

UINT8 = 0x08
# The four files of MNIST and Fashion-MNIST, by split, as (images, labels), without the optional '.gz'.
FILES: Dict[str, Tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _open(path: str):
  with open(path, "rb") as f:
    gzipped = f.read(2) == b"\x1f\x8b"
  return gzip.open(path, "rb") if gzipped else open(path, "rb")


def _read(path: str, size: int = -1) -> bytes:
  """The (gunzipped) bytes of `path`: all, or the first `size`."""
  try:
    with _open(path) as f:
      return f.read(size)
  except (EOFError, OSError, zlib.error) as e:   # a truncated or damaged gzip stream
    raise IdxError(f"{path}: the gzip stream is damaged or truncated ({type(e).__name__}: {e})") from None


def read_idx(path: str, ndim: int) -> np.ndarray:
  """The uint8 array of IDX file `path`, which must have `ndim` dimensions and exactly the bytes they need."""
  raw = _read(path)
  header = 4 + 4 * ndim
  want_magic = (UINT8 << 8) | ndim
  if len(raw) < 4:
    raise IdxError(f"{path}: {len(raw)} bytes, too short for an IDX file: empty or truncated")
  magic = int.from_bytes(raw[:4], "big")
  if magic != want_magic:
    kind = "image" if ndim == 3 else "label"
    raise IdxError(f"{path}: magic number {magic:#010x}, expected {want_magic:#010x} (uint8, {ndim} dimensions): "
                   f"not an IDX {kind} file")
  if len(raw) < header:
    raise IdxError(f"{path}: {len(raw)} bytes, too short for the {header}-byte IDX header: truncated")
  dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
  expected, got = int(np.prod(dims)), len(raw) - header
  if got != expected:
    problem = "truncated" if got < expected else "extra bytes at the end"
    raise IdxError(f"{path}: the header gives shape {dims}, {expected} bytes of data, but the file holds "
                   f"{got}: {problem}")
  return np.frombuffer(raw, np.uint8, expected, header).reshape(dims)


def find(directory: str, split: str) -> Tuple[str, str]:
  """The (images, labels) paths of `split` in `directory`, each gzipped or not; None if either is missing."""
  paths = []
  for stem in FILES[split]:
    found = [p for p in (os.path.join(directory, stem + ".gz"), os.path.join(directory, stem)) if os.path.isfile(p)]
    if not found:
      return None
    paths.append(found[0])
  return tuple(paths)


def read_pair(images_path: str, labels_path: str, image_shape: Tuple[int, int], num_classes: int):
  """Images (N, H, W, 1) and labels (N,) from an IDX pair, checked to agree with each other and the data set."""
  images, labels = read_idx(images_path, 3), read_idx(labels_path, 1)
  if images.shape[1:] != tuple(image_shape):
    raise IdxError(f"{images_path}: images of {images.shape[1]}x{images.shape[2]} pixels, expected "
                   f"{image_shape[0]}x{image_shape[1]}")
  if len(images) != len(labels):
    raise IdxError(f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels: "
                   "the files do not belong together")
  if len(labels) and labels.max() >= num_classes:
    i = int(np.argmax(labels >= num_classes))
    raise IdxError(f"{labels_path}: label {labels[i]} at index {i} is outside [0, {num_classes})")
  return images[..., None], labels


def count(path: str) -> int:
  """The number of items an IDX file's header declares (its first dimension), reading only the header."""
  head = _read(path, 8)
  if len(head) < 8:
    raise IdxError(f"{path}: {len(head)} bytes, too short for an IDX header: empty or truncated")
  return int.from_bytes(head[4:8], "big")
