"""What every data source shares: the description of a data set, the one error (and message) of a data set that
is not prepared, and where TFDS keeps prepared data. Imported by sources.py and text.py alike."""
import dataclasses
import os
from typing import Any, Mapping, Optional, Sequence, Tuple

from cnnjax.errors import NotPreparedError


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


def not_prepared(name: str, searched: Sequence[str], prepare: Sequence[str]) -> NotPreparedError:
  """The error of a data set that is not there, worded once for all: its name, every place it was looked for,
  and the command (or several alternatives) that prepares it."""
  how = f": {prepare[0]}" if len(prepare) == 1 else ", either: " + "; or ".join(prepare)
  return NotPreparedError(f"data set {name!r} is not prepared; searched {', '.join(searched)}. Nothing is "
                          f"downloaded at training time. To prepare it{how}")


def default_data_dir() -> str:
  """TFDS's default: $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
  return os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")
