"""Per-example preprocessing, as Grain transforms: crop, resize, flip, normalise.

Records enter as {'image': uint8 HxWxC of any size, or an `EncodedImage` still to be decoded, 'label': int} and
leave as {'image': SxSxC, 'label': int32} (plus 'mask' when present): uint8 with `normalize=False` (the training
pipeline's default: the jitted step normalises on the device, `pipeline.on_device`), else float32 normalised by
the data set's per-channel mean and std. Random
choices are drawn from the numpy Generator Grain hands to `random_map`, which Grain derives from the pipeline
seed and the example's position in the stream: the same seed gives the same augmented images.

Augmentations (`augment`):
  none                 resize to SxS
  flip                 resize to SxS, random horizontal flip
  pad_crop(_flip)      resize to SxS, zero-pad by `pad` and crop SxS at a random offset (He et al. 2016, Sec. 4.2)
  inception_crop(_flip) random-resized crop (Szegedy et al. 2015, Sec. 6: area 8%-100%, aspect 3/4-4/3) to SxS
  center_crop          evaluation crop: the central `crop_fraction` of the shorter side (224/256 = 0.875),
                       resized to SxS (equivalent to resizing the shorter side to S/0.875, then a center crop)

After those, on the training images (torchvision's reference recipe order):
  trivial_augment      TrivialAugmentWide (Mueller & Hutter 2021): one of 14 operations, uniformly, at one of 31
                       magnitudes, uniformly, negated with probability 1/2 where signed; the operations, their
                       magnitude tables and fill are torchvision.transforms.v2.TrivialAugmentWide's (on PIL images,
                       nearest-neighbour geometry, fill 0), done with PIL's ImageOps / ImageEnhance / transform
  random_erasing = p   with probability p, a box of 2%-33% of the area and aspect ratio log-uniform in 0.3-3.3
                       (10 attempts) set to 0 after normalisation (the mean), as torchvision's RandomErasing

`fit` says how an image becomes SxS before none/flip/pad_crop: 'resize' (bilinear), or 'pad' (centred on a zero
canvas, never scaled: LeNet-5's input, MNIST's 28x28 digits in a 32x32 field, LeCun et al. 1998 Sec. III.A).

Reduced-scale decoding (`draft=True`): an `EncodedImage` JPEG whose crop box, drawn on the full image's size as
always, is at least 2x, 4x or 8x the output size in both directions is decoded at 1/2, 1/4 or 1/8 scale (libjpeg's
DCT scaling, PIL's `Image.draft`) and the box resized from the reduced image: the same boxes and flips as a full
decode, the pixels within a few levels of it (tests/test_input_pipeline.py), for a fraction of the decode time.
"""
import dataclasses
import io
import math
from typing import Callable, Optional, Sequence, Tuple

import grain
import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from cnnjax.errors import BadExampleError, ConfigError

AUGMENTS = ("none", "flip", "pad_crop", "pad_crop_flip", "inception_crop", "inception_crop_flip", "center_crop")
FITS = ("resize", "pad")

Box = Tuple[int, int, int, int]   # (top, left, height, width)
DRAFT_SCALES = (8, 4, 2)          # the reductions libjpeg decodes directly (PIL's JpegImageFile.draft)


def draft_scale(box: Box, size: int) -> int:
  """The largest JPEG reduction (8, 4, 2, else 1) at which the box still spans at least `size` pixels in both
  directions, so its resize to size x size still shrinks (or keeps) and no detail is made up."""
  return next((s for s in DRAFT_SCALES if min(box[2], box[3]) >= s * size), 1)


class EncodedImage:
  """Encoded image bytes decoded in the pipeline, by `Preprocess`, once the crop is known. `where` names the
  example in errors."""

  def __init__(self, data: bytes, channels: int, where: str):
    self.data, self.channels, self.where = data, channels, where

  def decode(self, box_of: Callable[[int, int], Optional[Box]], size: int, reduce: bool):
    """(image, box): with a box (`box_of(height, width)`, drawn on the full size), the box resized to
    size x size and box None; without one (fit='pad'), the decoded image and None. With `reduce`, a JPEG whose
    box allows it (`draft_scale`) is decoded at reduced scale. Without reduction the pixels equal those of
    `resize(crop(decoded image, box), size)`, cropped in PIL to skip copying the whole image."""
    mode = "L" if self.channels == 1 else "RGB"
    try:
      with Image.open(io.BytesIO(self.data)) as pil:
        width, height = pil.size
        box = box_of(height, width)
        s = draft_scale(box, size) if reduce and box is not None and pil.format == "JPEG" else 1
        if s > 1:
          pil.draft(mode, (width // s, height // s))
        im = pil.convert(mode) if pil.mode != mode else pil
        im.load()
    except Exception as e:  # PIL raises several types for corrupt data
      raise BadExampleError(f"{self.where}: the image cannot be decoded ({type(e).__name__}: {e})") from e
    if box is not None:
      top, left, h, w = box
      if im.size != (width, height):   # decoded at 1/s: full-size pixel edge x is x / s here
        s = min(DRAFT_SCALES, key=lambda k: abs(k - width / im.size[0]))
        im = im.resize((size, size), Image.BILINEAR, box=(left / s, top / s, (left + w) / s, (top + h) / s))
      else:
        im = im.crop((left, top, left + w, top + h))
        im = im if im.size == (size, size) else im.resize((size, size), Image.BILINEAR)
      box = None
    out = np.asarray(im)
    return (out[..., None] if self.channels == 1 else out), box


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
    raise ConfigError(f"an image of {h}x{w} pixels does not fit in dataset.image_size={size} with "
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


# TrivialAugmentWide's operations in torchvision's order, with their magnitude tables (31 bins) and whether a
# magnitude is negated with probability 1/2.
NUM_MAGNITUDE_BINS = 31


def _linspace32(lo: float, hi: float, n: int = NUM_MAGNITUDE_BINS) -> np.ndarray:
  """torch.linspace(lo, hi, n) (float32) to the bit: a float32 step, the first half counted up from lo and the
  rest down from hi (np.linspace differs in the last bit at some bins, which moves a few magnitudes)."""
  lo, hi = np.float32(lo), np.float32(hi)
  step = np.float64((hi - lo) / np.float32(n - 1))
  i = np.arange(n, dtype=np.float64)
  return np.where(i < n // 2, np.float64(lo) + step * i, np.float64(hi) - step * (n - 1 - i)).astype(np.float32)


_LIN = _linspace32
TRIVIAL_OPS = (("Identity", None, False), ("ShearX", _LIN(0.0, 0.99), True), ("ShearY", _LIN(0.0, 0.99), True),
               ("TranslateX", _LIN(0.0, 32.0), True), ("TranslateY", _LIN(0.0, 32.0), True),
               ("Rotate", _LIN(0.0, 135.0), True), ("Brightness", _LIN(0.0, 0.99), True),
               ("Color", _LIN(0.0, 0.99), True), ("Contrast", _LIN(0.0, 0.99), True),
               ("Sharpness", _LIN(0.0, 0.99), True),
               ("Posterize", np.round(8 - np.arange(NUM_MAGNITUDE_BINS) / ((NUM_MAGNITUDE_BINS - 1) / 6)).astype(int),
                False),
               ("Solarize", _LIN(1.0, 0.0), False), ("AutoContrast", None, False), ("Equalize", None, False))


def _pil(image: np.ndarray) -> Image.Image:
  return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)


def _array(pil: Image.Image, channels: int) -> np.ndarray:
  out = np.asarray(pil)
  return out[..., None] if channels == 1 else out


def trivial_op(image: np.ndarray, op: str, magnitude: float) -> np.ndarray:
  """One TrivialAugmentWide operation on a uint8 HxWxC image (C = 1 or 3), with torchvision's meaning of the
  magnitude: shears by atan(m) in degrees about the corner, translations by int(m) pixels, rotation by m degrees
  about the centre (nearest neighbour, fill 0), enhancement factors 1 + m, posterize to m bits, solarize above
  255 m."""
  if op == "Identity":
    return image
  img = _pil(image)
  if op in ("ShearX", "ShearY"):
    t = math.tan(math.radians(math.degrees(math.atan(magnitude))))  # torchvision's shear angle, back to a slope
    matrix = (1.0, t, 0.0, 0.0, 1.0, 0.0) if op == "ShearX" else (1.0, 0.0, 0.0, t, 1.0, 0.0)
    out = img.transform(img.size, Image.AFFINE, matrix, Image.NEAREST)
  elif op in ("TranslateX", "TranslateY"):
    dx, dy = (int(magnitude), 0) if op == "TranslateX" else (0, int(magnitude))
    out = img.transform(img.size, Image.AFFINE, (1.0, 0.0, float(-dx), 0.0, 1.0, float(-dy)), Image.NEAREST)
  elif op == "Rotate":
    out = img.rotate(magnitude, Image.NEAREST)
  elif op in ("Brightness", "Color", "Contrast", "Sharpness"):
    out = getattr(ImageEnhance, op)(img).enhance(1.0 + magnitude)
  elif op == "Posterize":
    out = ImageOps.posterize(img, int(magnitude))
  elif op == "Solarize":
    out = ImageOps.solarize(img, 255.0 * magnitude)
  elif op == "AutoContrast":
    out = ImageOps.autocontrast(img)
  elif op == "Equalize":
    out = ImageOps.equalize(img)
  else:
    raise ValueError(f"unknown TrivialAugmentWide operation {op!r}; known: {[o[0] for o in TRIVIAL_OPS]}")
  return _array(out, image.shape[-1])


def trivial_augment(image: np.ndarray, rng) -> np.ndarray:
  """TrivialAugmentWide on a uint8 HxWxC image: an operation, a magnitude bin and a sign drawn from `rng` (a
  numpy Generator: integers(lo, hi), random()) in torchvision's order."""
  op, magnitudes, signed = TRIVIAL_OPS[int(rng.integers(0, len(TRIVIAL_OPS)))]
  magnitude = 0.0
  if magnitudes is not None:
    magnitude = float(magnitudes[int(rng.integers(0, NUM_MAGNITUDE_BINS))])
    if signed and rng.random() <= 0.5:
      magnitude = -magnitude
  return trivial_op(image, op, magnitude)


def erasing_box(height: int, width: int, rng, scale: Sequence[float] = (0.02, 0.33),
                ratio: Sequence[float] = (0.3, 3.3)) -> Box | None:
  """torchvision's RandomErasing box: area a uniform fraction in `scale`, aspect ratio h/w log-uniform in
  `ratio`, both sides smaller than the image's, at a uniform position; None after 10 misses (nothing erased)."""
  area = height * width
  log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
  for _ in range(10):
    erase_area = area * rng.uniform(scale[0], scale[1])
    aspect = math.exp(rng.uniform(log_lo, log_hi))
    h = int(round(math.sqrt(erase_area * aspect)))
    w = int(round(math.sqrt(erase_area / aspect)))
    if not (h < height and w < width):
      continue
    top = int(rng.integers(0, height - h + 1))
    left = int(rng.integers(0, width - w + 1))
    return top, left, h, w
  return None


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
  trivial_augment: bool = False
  random_erasing: float = 0.0
  normalize: bool = True  # False: leave uint8 (normalised on the device)
  draft: bool = False     # decode EncodedImage JPEGs at reduced scale when the crop allows it

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
    if not 0 <= self.random_erasing <= 1:
      raise ConfigError(f"config.dataset.random_erasing={self.random_erasing!r} is invalid: a probability in [0, 1]")
    if not 0 < self.crop_fraction <= 1:
      raise ConfigError(f"config.dataset.eval_crop_fraction={self.crop_fraction!r} is invalid: in (0, 1]")
    self._mean = np.asarray(self.mean, np.float32)
    self._std = np.asarray(self.std, np.float32)

  def _box(self, height: int, width: int, rng: np.random.Generator) -> Optional[Box]:
    """The region resized to SxS (the whole image for none/flip/pad_crop), or None for fit='pad'."""
    if self.augment.startswith("inception_crop"):
      return inception_crop_box(height, width, rng, self.area_range, self.aspect_range)
    if self.augment == "center_crop":
      return center_crop_box(height, width, self.crop_fraction)
    return None if self.fit == "pad" else (0, 0, height, width)

  def random_map(self, record, rng: np.random.Generator):
    image, box = record["image"], None
    if isinstance(image, EncodedImage):
      image, box = image.decode(lambda h, w: self._box(h, w, rng), self.image_size, self.draft)
    else:
      image = np.asarray(image)
      box = self._box(*image.shape[:2], rng)
    if box is not None:
      image = resize(crop(image, box), self.image_size)
    elif image.shape[:2] != (self.image_size, self.image_size):
      image = pad_to(image, self.image_size)
    a = self.augment
    if a.startswith("pad_crop"):
      image = pad_crop(image, self.pad, rng)
    if a.endswith("flip") and rng.random() < 0.5:
      image = image[:, ::-1]
    if self.trivial_augment:
      image = trivial_augment(np.ascontiguousarray(image), rng)
    if self.channels == 3 and image.shape[-1] == 1:
      image = np.repeat(image, 3, axis=-1)
    if self.normalize:
      image = (image.astype(np.float32) / 255.0 - self._mean) / self._std
    image = np.array(image)  # a writable copy, contiguous
    if self.random_erasing and rng.random() < self.random_erasing:
      box = erasing_box(*image.shape[:2], rng)
      if box is not None:  # erased to 0 after normalising (the mean); in uint8, to the mean's nearest level
        top, left, h, w = box
        image[top:top + h, left:left + w] = 0.0 if self.normalize else np.round(self._mean * 255.0)
    out = {"image": image, "label": np.int32(record["label"])}
    if "mask" in record:
      out["mask"] = np.bool_(record["mask"])
    return out
