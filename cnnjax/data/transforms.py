"""Per-example preprocessing, as Grain transforms: crop, resize, flip, normalise.

Records enter as {'image': uint8 HxWxC of any size, 'label': int} and leave as {'image': float32 SxSxC
normalised by the data set's per-channel mean and std, 'label': int32} (plus 'mask' when present). Random
choices are drawn from the numpy Generator Grain hands to `random_map`, which Grain derives from the pipeline
seed and the example's position in the stream: the same seed gives the same augmented images.

Augmentations (`augment`):
  none                 resize to SxS
  flip                 resize to SxS, random horizontal flip
  pad_crop(_flip)      resize to SxS, zero-pad by `pad` and crop SxS at a random offset (He et al. 2016, Sec. 4.2)
  inception_crop(_flip) random-resized crop (Szegedy et al. 2015, Sec. 6: area 8%-100%, aspect 3/4-4/3) to SxS
  center_crop          evaluation crop: the central `crop_fraction` of the shorter side (224/256 = 0.875),
                       resized to SxS (equivalent to resizing the shorter side to S/0.875, then a center crop)

`fit` says how an image becomes SxS before none/flip/pad_crop: 'resize' (bilinear), or 'pad' (centred on a zero
canvas, never scaled: LeNet-5's input, MNIST's 28x28 digits in a 32x32 field, LeCun et al. 1998 Sec. III.A).
"""
import dataclasses
import math
from typing import Sequence, Tuple

import grain
import numpy as np
from PIL import Image

from cnnjax.errors import ConfigError

AUGMENTS = ("none", "flip", "pad_crop", "pad_crop_flip", "inception_crop", "inception_crop_flip", "center_crop")
FITS = ("resize", "pad")

Box = Tuple[int, int, int, int]   # (top, left, height, width)


def resize(image: np.ndarray, size: int) -> np.ndarray:
  """Bilinear (antialiased when shrinking) resize of a uint8 HxWxC image to size x size; no-op at that size."""
  if image.shape[0] == size and image.shape[1] == size:
    return image
  channels = image.shape[-1]
  pil = Image.fromarray(image[..., 0] if channels == 1 else image)
  out = np.asarray(pil.resize((size, size), Image.BILINEAR))
  return out[..., None] if channels == 1 else out


def pad_to(image: np.ndarray, size: int) -> np.ndarray:
  """A uint8 HxWxC image centred on a size x size zero canvas (the odd pixel of slack goes below/right)."""
  h, w = image.shape[:2]
  if h > size or w > size:
    raise ValueError(f"an image of {h}x{w} pixels does not fit in dataset.image_size={size} with "
                     "dataset.fit='pad' (which never shrinks); use fit='resize' or a larger image_size")
  top, left = (size - h) // 2, (size - w) // 2
  return np.pad(image, ((top, size - h - top), (left, size - w - left), (0, 0)))


def crop(image: np.ndarray, box: Box) -> np.ndarray:
  top, left, h, w = box
  return image[top:top + h, left:left + w]


def pad_crop(image: np.ndarray, pad: int, rng: np.random.Generator) -> np.ndarray:
  """Zero-pad by `pad` on each side and crop back to the original size at a random offset (He et al. 2016)."""
  h, w = image.shape[:2]
  padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
  y, x = rng.integers(0, 2 * pad + 1, size=2)
  return padded[y:y + h, x:x + w]


def inception_crop_box(height: int, width: int, rng: np.random.Generator,
                       area_range: Sequence[float] = (0.08, 1.0),
                       aspect_range: Sequence[float] = (3 / 4, 4 / 3), attempts: int = 10) -> Box:
  """A random crop box whose area is a uniform fraction in `area_range` of the image's and whose aspect ratio
  (w/h) is log-uniform in `aspect_range` (Szegedy et al. 2015). After `attempts` misses, the largest central
  box whose aspect ratio lies in the range."""
  area = height * width
  log_lo, log_hi = math.log(aspect_range[0]), math.log(aspect_range[1])
  for _ in range(attempts):
    target = area * rng.uniform(area_range[0], area_range[1])
    ratio = math.exp(rng.uniform(log_lo, log_hi))
    w = int(round(math.sqrt(target * ratio)))
    h = int(round(math.sqrt(target / ratio)))
    if 0 < w <= width and 0 < h <= height:
      top = int(rng.integers(0, height - h + 1))
      left = int(rng.integers(0, width - w + 1))
      return top, left, h, w
  ratio = width / height
  if ratio < aspect_range[0]:
    w, h = width, min(height, int(round(width / aspect_range[0])))
  elif ratio > aspect_range[1]:
    h, w = height, min(width, int(round(height * aspect_range[1])))
  else:
    h, w = height, width
  return (height - h) // 2, (width - w) // 2, h, w


def center_crop_box(height: int, width: int, fraction: float) -> Box:
  """The central square whose side is `fraction` of the shorter side (at least 1 pixel)."""
  side = max(1, int(round(fraction * min(height, width))))
  return (height - side) // 2, (width - side) // 2, side, side


@dataclasses.dataclass
class Preprocess(grain.transforms.RandomMap):
  """Crop/resize/flip per `augment`, then normalise; deterministic given Grain's per-example rng."""
  image_size: int
  mean: Sequence[float]
  std: Sequence[float]
  augment: str = "none"
  pad: int = 4
  area_range: Sequence[float] = (0.08, 1.0)
  aspect_range: Sequence[float] = (3 / 4, 4 / 3)
  crop_fraction: float = 0.875
  fit: str = "resize"
  channels: int = 0      # 3: grey images are replicated to RGB (for pretrained weights); 0: as they come

  def __post_init__(self):
    if self.augment not in AUGMENTS:
      raise ConfigError(f"config.dataset.augment={self.augment!r} is not one of {AUGMENTS}")
    if self.fit not in FITS:
      raise ConfigError(f"config.dataset.fit={self.fit!r} is not one of {FITS}")
    if self.fit == "pad" and "crop" in self.augment and not self.augment.startswith("pad_crop"):
      raise ConfigError(f"config.dataset.fit='pad' does not go with augment {self.augment!r}, which resizes its "
                        "crop: use none, flip or pad_crop(_flip), or fit='resize'")
    if not 0 < self.area_range[0] <= self.area_range[1] <= 1:
      raise ConfigError(f"config.dataset.crop_area_range={tuple(self.area_range)!r} is invalid: "
                        "0 < lo <= hi <= 1")
    if not 0 < self.aspect_range[0] <= self.aspect_range[1]:
      raise ConfigError(f"config.dataset.crop_aspect_range={tuple(self.aspect_range)!r} is invalid: 0 < lo <= hi")
    if not 0 < self.crop_fraction <= 1:
      raise ConfigError(f"config.dataset.eval_crop_fraction={self.crop_fraction!r} is invalid: in (0, 1]")
    self._mean = np.asarray(self.mean, np.float32)
    self._std = np.asarray(self.std, np.float32)

  def random_map(self, record, rng: np.random.Generator):
    image = np.asarray(record["image"])
    a = self.augment
    if a.startswith("inception_crop"):
      image = resize(crop(image, inception_crop_box(*image.shape[:2], rng, self.area_range, self.aspect_range)),
                     self.image_size)
    elif a == "center_crop":
      image = resize(crop(image, center_crop_box(*image.shape[:2], self.crop_fraction)), self.image_size)
    else:
      image = (pad_to if self.fit == "pad" else resize)(image, self.image_size)
    if a.startswith("pad_crop"):
      image = pad_crop(image, self.pad, rng)
    if a.endswith("flip") and rng.random() < 0.5:
      image = image[:, ::-1]
    if self.channels == 3 and image.shape[-1] == 1:
      image = np.repeat(image, 3, axis=-1)
    image = (image.astype(np.float32) / 255.0 - self._mean) / self._std
    out = {"image": image, "label": np.int32(record["label"])}
    if "mask" in record:
      out["mask"] = np.bool_(record["mask"])
    return out
