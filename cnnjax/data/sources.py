"""Random-access data sources: each is a sequence of records {'image': uint8 HxWxC, 'label': int}.

All data sets, embedded or TFDS, come through `get_source(dataset_config, split)`, which returns the source and
its `DatasetInfo`. Data set names are looked up in `DATASETS`; an unknown name lists the known ones.
"""
import dataclasses
import difflib
from typing import Callable, Dict, Sequence, Tuple

import numpy as np

from cnnjax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  name: str
  num_classes: int
  image_shape: Tuple[int, int, int]   # native (H, W, C); None entries for variable sizes are not used here
  mean: Sequence[float]               # per-channel, on images scaled to [0, 1]
  std: Sequence[float]
  splits: Tuple[str, ...]


class ArraySource:
  """A random-access source over in-memory arrays (grain's RandomAccessDataSource protocol)."""

  def __init__(self, images: np.ndarray, labels: np.ndarray):
    assert len(images) == len(labels)
    self.images, self.labels = images, labels

  def __len__(self):
    return len(self.images)

  def __getitem__(self, i):
    return {"image": self.images[i], "label": int(self.labels[i])}

  def __repr__(self):
    return f"ArraySource(n={len(self)}, image_shape={self.images.shape[1:]})"


# --- scikit-learn's handwritten digits ------------------------------------------------------------------------
# 1,797 real 8x8 grey images (UCI optdigits test set, values 0..16), shipped inside scikit-learn: the one real
# data set available without network. Fixed split: within each class, in the order of the file, every fifth
# example (positions 4, 9, 14, ... of that class) is a test example: 355 test, 1,442 train (floor(n_c/5) of
# each class c).
DIGITS_INFO = DatasetInfo("digits", 10, (8, 8, 1), mean=(0.3061,), std=(0.3239,), splits=("train", "test"))


def digits_split_indices():
  from sklearn.datasets import load_digits
  labels = load_digits().target
  rank = np.zeros(len(labels), np.int64)
  for c in range(10):
    idx = np.flatnonzero(labels == c)
    rank[idx] = np.arange(len(idx))
  test = rank % 5 == 4
  return np.flatnonzero(~test), np.flatnonzero(test)


def digits_source(split: str) -> ArraySource:
  from sklearn.datasets import load_digits
  if split not in DIGITS_INFO.splits:
    raise ValueError(f"digits has splits {DIGITS_INFO.splits}, not {split!r}")
  d = load_digits()
  images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
  train, test = digits_split_indices()
  idx = train if split == "train" else test
  return ArraySource(images[idx], d.target[idx].astype(np.int32))


DATASETS: Dict[str, Tuple[Callable, DatasetInfo]] = {
    "digits": (lambda cfg, split: digits_source(split), DIGITS_INFO),
}


def get_source(dataset_config, split: str):
  """Returns (source, info) for `dataset_config.name` and `split`."""
  name = dataset_config.name
  if name not in DATASETS:
    close = difflib.get_close_matches(name, list(DATASETS), 3)
    hint = f" Did you mean {close}?" if close else ""
    raise ConfigError(f"unknown data set dataset.name={name!r}.{hint} Known: {sorted(DATASETS)}")
  make, info = DATASETS[name]
  return make(dataset_config, split), info
