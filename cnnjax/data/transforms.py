"""Per-example preprocessing, as Grain transforms: resize, augment, normalise.

Records enter as {'image': uint8 HxWxC, 'label': int} and leave as {'image': float32 HxWxC normalised by the
data set's per-channel mean and std, 'label': int32}. Augmentations are drawn from the numpy Generator Grain
hands to `random_map`, which Grain derives from the pipeline seed and the example's index: deterministic.
"""
import dataclasses
from typing import Sequence

import grain
import numpy as np
from PIL import Image

AUGMENTS = ("none", "pad_crop", "pad_crop_flip")


def resize(image: np.ndarray, size: int) -> np.ndarray:
  """Bilinear resize of a uint8 HxWxC image to size x size (no-op when already that size)."""
  if image.shape[0] == size and image.shape[1] == size:
    return image
  channels = image.shape[-1]
  pil = Image.fromarray(image[..., 0] if channels == 1 else image)
  out = np.asarray(pil.resize((size, size), Image.BILINEAR))
  return out[..., None] if channels == 1 else out


def pad_crop(image: np.ndarray, pad: int, rng: np.random.Generator) -> np.ndarray:
  """Zero-pad by `pad` on each side and crop back to the original size at a random offset (He et al. 2016)."""
  h, w = image.shape[:2]
  padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
  y, x = rng.integers(0, 2 * pad + 1, size=2)
  return padded[y:y + h, x:x + w]


@dataclasses.dataclass
class Preprocess(grain.transforms.RandomMap):
  image_size: int
  mean: Sequence[float]
  std: Sequence[float]
  augment: str = "none"
  pad: int = 4

  def __post_init__(self):
    if self.augment not in AUGMENTS:
      raise ValueError(f"dataset.augment={self.augment!r} is not one of {AUGMENTS}")

  def random_map(self, record, rng: np.random.Generator):
    image = resize(np.asarray(record["image"]), self.image_size)
    if self.augment in ("pad_crop", "pad_crop_flip"):
      image = pad_crop(image, self.pad, rng)
    if self.augment == "pad_crop_flip" and rng.random() < 0.5:
      image = image[:, ::-1]
    image = (image.astype(np.float32) / 255.0 - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
    out = {"image": image, "label": np.int32(record["label"])}
    if "mask" in record:
      out["mask"] = np.bool_(record["mask"])
    return out
