"""What every data source shares: the description of a data set, the error of one that is not prepared, and
where TFDS keeps prepared data. Imported by sources.py and text.py alike (neither imports the other's
internals through it)."""
import dataclasses
import os
from typing import Any, Mapping, Optional, Sequence, Tuple

from cnnjax.errors import NotPreparedError  # noqa: F401 (its old home)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  name: str
  num_classes: int
  image_shape: Tuple[Optional[int], Optional[int], int]   # native (H, W, C); None for variable sizes
  mean: Sequence[float]               # per-channel, on images scaled to [0, 1]
  std: Sequence[float]
  splits: Tuple[str, ...]
  class_names: Tuple[str, ...] = ()   # label k's name, where the data set has names (image folders)
  # Set by sources whose records are ready model inputs (text): the input's shape without the batch axis and
  # its dtype, and options the model needs from the data (vocab_size, embedding_init). None: an image, whose
  # model input is (image_size, image_size, channels) float32 after pipeline.preprocess.
  input_shape: Optional[Tuple[int, ...]] = None
  input_dtype: str = "float32"
  model_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def default_data_dir() -> str:
  """TFDS's default: $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
  return os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")
