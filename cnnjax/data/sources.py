"""Random-access data sources: each is a sequence of records {'image': uint8 HxWxC, 'label': int}, or for text
{'tokens': int32 (max_len,), 'label': int} (text.py).

All data sets, embedded, synthetic, IDX files (mnist, fashion_mnist), image folders, TFDS or text, come through
`get_source(dataset_config, split)`, which returns the source and its `DatasetInfo`. Names are looked up in the
data set registry (registry.py), where this module registers the image data sets and text.py the text ones
(exact names such as 'digits', 'synthetic', 'folder', 'cifar10', or a TFDS family with its config, such as
'imagenette/320px-v2'); an unknown name lists the known ones. Every image source is wrapped in `CheckedSource`,
which decodes encoded images and rejects bad examples with an error naming the data set, the split and the
example's index.

TFDS data sets are read with `tfds.data_source` from prepared ArrayRecord files, never downloaded: a data set
that is not prepared in `data_dir` fails at once with the command that prepares it. TensorFlow is not imported.
"""
import dataclasses
import io
import os
import zlib
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from cnnjax.data import folder, idx, registry, text
from cnnjax.data.base import DatasetInfo, default_data_dir, not_prepared  # noqa: F401 (re-exported)
from cnnjax.data.transforms import EncodedImage
from cnnjax.errors import BadExampleError, ConfigError, DataNotFoundError, NotPreparedError  # noqa: F401


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


def decode_image(data: bytes, channels: int) -> np.ndarray:
  """Encoded JPEG/PNG bytes -> uint8 HxWxC with `channels` channels (1: grey, 3: RGB)."""
  from PIL import Image
  with Image.open(io.BytesIO(data)) as pil:
    out = np.asarray(pil.convert("L" if channels == 1 else "RGB"))
  return out[..., None] if channels == 1 else out


class CheckedSource:
  """Wraps a source: keeps 'image' and 'label', decodes encoded images, and checks every example.

  An image must be uint8-compatible of rank 3 with `channels` channels, a label an integer in
  [0, num_classes); anything else raises BadExampleError naming the data set, the split and the index.
  `lazy()`: the same source whose encoded images are left to the pipeline (`EncodedImage`), which decodes them
  once it knows the crop, at reduced scale where the crop allows it.
  """

  def __init__(self, source, name: str, split: str, num_classes: int, channels: int, lazy: bool = False):
    self.source, self.name, self.split = source, name, split
    self.num_classes, self.channels, self.is_lazy = num_classes, channels, lazy

  def lazy(self) -> "CheckedSource":
    return CheckedSource(self.source, self.name, self.split, self.num_classes, self.channels, lazy=True)

  def __len__(self):
    return len(self.source)

  def __getitem__(self, i):
    where = f"example {i} of data set {self.name!r} split {self.split!r}"
    if hasattr(self.source, "example_path"):
      where += f" ({self.source.example_path(i)})"
    record = self.source[i]
    image = record["image"]
    if isinstance(image, (bytes, np.bytes_)) and self.is_lazy:
      image = EncodedImage(bytes(image), self.channels, where)
    elif isinstance(image, (bytes, np.bytes_)):
      try:
        image = decode_image(bytes(image), self.channels)
      except Exception as e:  # PIL raises several types for corrupt data
        raise BadExampleError(f"{where}: the image cannot be decoded ({type(e).__name__}: {e})") from e
    if not isinstance(image, EncodedImage):   # an encoded one is checked as it is decoded
      image = np.asarray(image)
      if image.ndim != 3 or image.shape[-1] != self.channels:
        raise BadExampleError(f"{where}: image of shape {image.shape}, expected (height, width, {self.channels})")
      if image.dtype != np.uint8:
        raise BadExampleError(f"{where}: image of dtype {image.dtype}, expected uint8")
    label = np.asarray(record["label"])
    if label.ndim != 0 or not np.issubdtype(label.dtype, np.integer):
      raise BadExampleError(f"{where}: label {label!r} is not an integer scalar")
    if not 0 <= int(label) < self.num_classes:
      raise BadExampleError(f"{where}: label {int(label)} is outside [0, {self.num_classes})")
    return {"image": image, "label": int(label)}

  def __repr__(self):
    return f"CheckedSource({self.name!r}, {self.split!r}, n={len(self)})"


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
    raise ConfigError(f"digits has splits {DIGITS_INFO.splits}, not {split!r}")
  d = load_digits()
  images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
  train, test = digits_split_indices()
  idx = train if split == "train" else test
  return ArraySource(images[idx], d.target[idx].astype(np.int32))


# --- synthetic ------------------------------------------------------------------------------------------------
class SyntheticSource:
  """Random uint8 images and labels, each a pure function of (seed, split, index): no memory, any size.

  With `jpeg=True` the images are smooth random pictures with noise stored as JPEG bytes (a pool of `pool` distinct
  ones, reused cyclically), so reading them costs a real JPEG decode as ImageNet's do.
  """

  def __init__(self, num_examples: int, image_shape, num_classes: int, seed: int, split: str,
               jpeg: bool = False, pool: int = 64):
    self.n, self.shape, self.num_classes = num_examples, tuple(image_shape), num_classes
    self.key = (seed, zlib.crc32(split.encode()))
    self.jpeg = [self._jpeg(k) for k in range(min(pool, num_examples))] if jpeg else None

  def _rng(self, i):
    return np.random.default_rng((*self.key, i))

  def _jpeg(self, k):
    from PIL import Image
    h, w, c = self.shape
    rng = self._rng(k)
    coarse = rng.integers(0, 256, (max(h // 16, 2), max(w // 16, 2), c), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse[..., 0] if c == 1 else coarse).resize((w, h), Image.BICUBIC))
    texture = np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8)   # photo-like entropy
    buf = io.BytesIO()
    Image.fromarray(texture).save(buf, format="JPEG", quality=90)
    return buf.getvalue()

  def __len__(self):
    return self.n

  def __getitem__(self, i):
    if not 0 <= i < self.n:
      raise IndexError(f"index {i} out of range for {self.n} synthetic examples")
    rng = self._rng(i)
    label = int(rng.integers(self.num_classes))
    image = self.jpeg[i % len(self.jpeg)] if self.jpeg else rng.integers(0, 256, self.shape, dtype=np.uint8)
    return {"image": image, "label": label}


def synthetic_source(cfg, split: str):
  s = cfg.synthetic
  shape = tuple(s.image_shape)
  if len(shape) != 3 or min(shape) < 1:
    raise ConfigError(f"config.dataset.synthetic.image_shape={shape!r} is invalid: (height, width, channels) > 0")
  n = s.num_train if split.startswith("train") else s.num_eval
  info = _synthetic_info(cfg)
  return SyntheticSource(n, shape, int(s.num_classes), seed=int(s.seed), split=split, jpeg=bool(s.jpeg)), info


# --- TFDS -----------------------------------------------------------------------------------------------------
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)   # torchvision's published values


@dataclasses.dataclass(frozen=True)
class TfdsFamily:
  num_classes: int
  image_shape: Tuple[Optional[int], Optional[int], int]
  mean: Sequence[float]
  std: Sequence[float]
  splits: Tuple[str, ...]
  configs: Tuple[str, ...] = ()       # allowed '/config' suffixes; () = none
  manual: str = ""                    # manual-download step, if the data set needs one


_IMAGENET_MANUAL = ("download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from https://image-net.org "
                    "(login required) into {data_dir}/downloads/manual/, then")
# Means and stds: per-channel pixel statistics of the training splits, in [0, 1].
TFDS_FAMILIES: Dict[str, TfdsFamily] = {
    "mnist": TfdsFamily(10, (28, 28, 1), (0.1307,), (0.3081,), ("train", "test")),
    "fashion_mnist": TfdsFamily(10, (28, 28, 1), (0.2860,), (0.3530,), ("train", "test")),
    "cifar10": TfdsFamily(10, (32, 32, 3), (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), ("train", "test")),
    "cifar100": TfdsFamily(100, (32, 32, 3), (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
                           ("train", "test")),
    "imagenette": TfdsFamily(10, (None, None, 3), IMAGENET_MEAN, IMAGENET_STD, ("train", "validation"),
                             configs=("full-size", "320px", "160px", "full-size-v2", "320px-v2", "160px-v2")),
    "imagenet2012": TfdsFamily(1000, (None, None, 3), IMAGENET_MEAN, IMAGENET_STD, ("train", "validation"),
                               manual=_IMAGENET_MANUAL),
    "imagenet2012_subset": TfdsFamily(1000, (None, None, 3), IMAGENET_MEAN, IMAGENET_STD, ("train", "validation"),
                                      configs=("1pct", "10pct"), manual=_IMAGENET_MANUAL),
    "imagenet_resized": TfdsFamily(1000, (None, None, 3), IMAGENET_MEAN, IMAGENET_STD, ("train", "validation"),
                                   configs=("8x8", "16x16", "32x32", "64x64")),
    "imagenet_v2": TfdsFamily(1000, (None, None, 3), IMAGENET_MEAN, IMAGENET_STD, ("test",),
                              configs=("matched-frequency", "threshold-0.7", "top-images")),
}


def build_command(name: str, data_dir: str) -> str:
  """The shell command that prepares `name` in `data_dir` as ArrayRecord files (with the manual step)."""
  family = TFDS_FAMILIES[name.split("/")[0]]
  cmd = f"tfds build {name} --file_format=array_record --data_dir={data_dir}"
  if family.manual:
    return family.manual.format(data_dir=data_dir) + f" run: {cmd} --manual_dir={data_dir}/downloads/manual"
  return cmd


def tfds_info(name: str) -> DatasetInfo:
  family_name, _, config = name.partition("/")
  f = TFDS_FAMILIES[family_name]
  if config and config not in f.configs or not config and family_name == "imagenet_resized":
    allowed = [f"{family_name}/{c}" for c in f.configs] or [family_name]
    raise ConfigError(f"config.dataset.name={name!r} is invalid: one of {allowed}")
  shape = f.image_shape
  if family_name == "imagenet_resized":
    side = int(config.split("x")[0])
    shape = (side, side, 3)
  return DatasetInfo(name, f.num_classes, shape, f.mean, f.std, f.splits)


def tfds_source(cfg, split: str, name: str):
  """`tfds.data_source` for `name` and `split`, after checking the data set is prepared (never downloads)."""
  info = tfds_info(name)
  import tensorflow_datasets as tfds
  data_dir = os.path.expanduser(cfg.data_dir) if cfg.data_dir else default_data_dir()
  builder = tfds.builder(name, data_dir=data_dir)
  if not builder.is_prepared():
    raise not_prepared(name, [f"TFDS-prepared files in {data_dir} (no dataset_info.json in {builder.data_dir})"],
                       [build_command(name, data_dir)])
  try:
    source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except (NotImplementedError, ValueError) as e:
    raise ConfigError(f"cannot read data set {name!r} split {split!r} from {data_dir} as a random-access "
                      f"source ({e}). Splits: {info.splits} (slices such as 'train[:90%]' work). If it was built "
                      f"in another file format, rebuild it with: {build_command(name, data_dir)}") from e
  return source, info


# --- MNIST and Fashion-MNIST: TFDS-prepared files, or the original IDX files ------------------------------------
IDX_NAMES = ("mnist", "fashion_mnist")   # TFDS families that are read from their original IDX files too
IDX_SYSTEM_DIRS = {"fashion_mnist": "/usr/share/datasets/fashion-mnist"}   # Debian's dataset-fashion-mnist
APT_COMMANDS = {"fashion_mnist": "apt-get install dataset-fashion-mnist"}


def _idx_dir(name: str, data_dir: Optional[str]) -> Optional[str]:
  """The first of data_dir and the system directory holding all four IDX files; a directory holding some but
  not all of them is an error (rather than silently reading another copy)."""
  for d in ([data_dir] if data_dir else []) + ([IDX_SYSTEM_DIRS[name]] if name in IDX_SYSTEM_DIRS else []):
    found = {s: idx.find(d, s) for s in idx.FILES}
    if all(found.values()):
      return d
    if any(found.values()):
      missing = [stem for pair in idx.FILES.values() for stem in pair
                 if not any(os.path.isfile(os.path.join(d, stem + ext)) for ext in (".gz", ""))]
      raise not_prepared(name, [f"{d}, which holds some of its IDX files but not {missing} (.gz or not)"],
                         [f"add the missing files to {d} (or remove the others from it)"])
  return None


def _not_found(name: str, data_dir: Optional[str], tfds_dir: str) -> NotPreparedError:
  stems = [stem for pair in idx.FILES.values() for stem in pair]
  places = [f"TFDS-prepared files in {tfds_dir}"] + ([f"the IDX files in {data_dir}"] if data_dir else []) + (
      [f"the IDX files in {IDX_SYSTEM_DIRS[name]}"] if name in IDX_SYSTEM_DIRS else [])
  get = ([f"install the original files with `{APT_COMMANDS[name]}` (read from {IDX_SYSTEM_DIRS[name]})"]
         if name in APT_COMMANDS else [f"put the four IDX files {stems} (.gz or not) in a directory and set "
                                       "config.dataset.data_dir to it"])
  get.append(f"build a TFDS copy with `{build_command(name, '<DIR>')}` and set config.dataset.data_dir=<DIR>")
  return not_prepared(name, places, get)


def _read_idx_split(directory: str, split: str, info: DatasetInfo) -> ArraySource:
  """The examples of `split` (TFDS split syntax: 'train', 'test[:10%]', 'train[:100]+test') from IDX files."""
  import types
  import tensorflow_datasets as tfds
  sizes = {s: types.SimpleNamespace(num_examples=idx.count(idx.find(directory, s)[1])) for s in idx.FILES}
  try:
    parts = tfds.core.ReadInstruction.from_spec(split).to_absolute(sizes)
  except (AssertionError, ValueError) as e:
    raise ConfigError(f"split {split!r} of data set {info.name!r} is invalid ({e}): one of {info.splits}, "
                      f"optionally sliced, such as 'train[:90%]'") from None
  arrays = {s: idx.read_pair(*idx.find(directory, s), info.image_shape[:2], info.num_classes)
            for s in {p.splitname for p in parts}}
  take = [(arrays[p.splitname][0][p.from_:p.to], arrays[p.splitname][1][p.from_:p.to]) for p in parts]
  if len(take) == 1:
    return ArraySource(*take[0])
  return ArraySource(np.concatenate([t[0] for t in take]), np.concatenate([t[1] for t in take]))


def idx_source(cfg, split: str, name: str):
  """MNIST or Fashion-MNIST from the first place that has it: a TFDS-prepared copy under data_dir (TFDS's
  default directory when unset), the four original IDX files in data_dir, the system directory (Debian's
  package). None of them: NotPreparedError, saying how to get it."""
  info = tfds_info(name)
  import tensorflow_datasets as tfds
  data_dir = os.path.expanduser(cfg.data_dir) if cfg.data_dir else None
  tfds_dir = data_dir or default_data_dir()
  if tfds.builder(name, data_dir=tfds_dir).is_prepared():
    return tfds_source(cfg, split, name)
  directory = _idx_dir(name, data_dir)
  if directory is None:
    raise _not_found(name, data_dir, tfds_dir)
  return _read_idx_split(directory, split, info), info


# --- image folders ----------------------------------------------------------------------------------------------
def folder_info(cfg) -> DatasetInfo:
  """Classes from the training split's directories; per-channel mean and std from the config, else ImageNet's
  (their averages for grey)."""
  if not cfg.data_dir:
    raise ConfigError("config.dataset.data_dir is unset: dataset.name='folder' reads data_dir/<split>/<class>/")
  f = cfg.folder
  if f.channels not in (1, 3):
    raise ConfigError(f"config.dataset.folder.channels={f.channels!r} is invalid: 1 (grey) or 3 (RGB)")
  grey = lambda v: v if f.channels == 3 else (float(np.mean(v)),)
  mean = tuple(f.mean) if f.mean is not None else grey(IMAGENET_MEAN)
  std = tuple(f.std) if f.std is not None else grey(IMAGENET_STD)
  for field, v in (("mean", mean), ("std", std)):
    if len(v) != f.channels or field == "std" and min(v) <= 0:
      raise ConfigError(f"config.dataset.folder.{field}={v!r} is invalid: {f.channels} value(s), one per channel"
                        + (", each > 0" if field == "std" else ""))
  names = tuple(folder.class_names(os.path.expanduser(cfg.data_dir), cfg.train_split))
  return DatasetInfo("folder", len(names), (None, None, f.channels), mean, std,
                     splits=(cfg.train_split, cfg.eval_split), class_names=names)


def folder_source(cfg, split: str, name: str):
  info = folder_info(cfg)
  paths, labels, _ = folder.scan(os.path.expanduser(cfg.data_dir), split, cfg.train_split,
                                 cfg.folder.on_bad_file, cfg.num_threads)
  return folder.FolderSource(paths, labels), info


# --- the image data sets in the registry (text.py registers the text ones) --------------------------------------
registry.register("digits", lambda d, split, name: (digits_source(split), DIGITS_INFO), lambda d, name: DIGITS_INFO)
registry.register("synthetic", lambda d, split, name: synthetic_source(d, split), lambda d, name: _synthetic_info(d))
registry.register("folder", folder_source, lambda d, name: folder_info(d))
for _family, _f in TFDS_FAMILIES.items():
  registry.register(_family, idx_source if _family in IDX_NAMES else tfds_source, lambda d, name: tfds_info(name),
                    configs=_f.configs)


def known_names():
  """Every accepted dataset.name (each TFDS family with its configs), sorted."""
  return registry.names()


def get_source(dataset_config, split: str, *, name: Optional[str] = None, vocab: Optional[text.Vocab] = None):
  """Returns (source, info) for data set `name` (default `dataset_config.name`) and `split`.

  The source is a `CheckedSource`: random access, lazy per example, images uint8 HxWxC, labels int. Text data
  sets give a `text.TextSource` encoded with `vocab` (one restored from the workdir), by default the
  vocabulary of their training split.
  """
  name = name or dataset_config.name
  entry = registry.lookup(name)
  if entry.is_text:
    return entry.source(dataset_config, split, name, vocab)   # checked line by line as it is read
  source, info = entry.source(dataset_config, split, name)
  source = CheckedSource(source, name, split, info.num_classes, info.image_shape[-1])
  return select(source, dataset_config, split, info.num_classes), _relabelled(info, dataset_config)


class ClassSubset:
  """The examples of `source` at `indices`, in source order; labels unchanged, or mapped by `relabel`."""

  def __init__(self, source, indices: np.ndarray, relabel: Optional[Mapping[int, int]] = None):
    self.source, self.indices, self.relabel = source, indices, relabel

  def __len__(self):
    return len(self.indices)

  def __getitem__(self, i):
    record = self.source[int(self.indices[i])]
    return {**record, "label": self.relabel[record["label"]]} if self.relabel else record

  def lazy(self) -> "ClassSubset":
    inner = self.source.lazy() if hasattr(self.source, "lazy") else self.source
    return ClassSubset(inner, self.indices, self.relabel)

  def __repr__(self):
    return f"ClassSubset({self.source!r}, n={len(self)})"


def _check_selection(d, num_classes: int) -> Tuple[Tuple[int, ...], int, bool]:
  classes, k, relabel = tuple(d.classes or ()), d.train_per_class, d.relabel
  ok = all(isinstance(c, (int, np.integer)) and 0 <= c < num_classes for c in classes)
  if not ok or len(set(classes)) != len(classes):
    raise ConfigError(f"config.dataset.classes={classes!r} is invalid: distinct ints in [0, {num_classes})")
  if not isinstance(k, (int, np.integer)) or not (k == -1 or k >= 1):
    raise ConfigError(f"config.dataset.train_per_class={k!r} is invalid: an int >= 1, or -1 for all")
  if relabel and not classes:
    raise ConfigError("config.dataset.relabel=True needs config.dataset.classes (the labels to map to 0..n-1)")
  return classes, int(k), bool(relabel)


def _labels(source) -> np.ndarray:
  inner = getattr(source, "source", source)
  return (np.asarray(inner.labels) if hasattr(inner, "labels")
          else np.array([source[i]["label"] for i in range(len(source))]))   # reads each example once


def select(source, d, split: str, num_classes: int):
  """The examples config.dataset `d` asks for, in source order:
  - `classes`: only these labels (e.g. the base classes of a few-shot split); the model keeps the data set's
    `num_classes` outputs and labels keep their values, unless
  - `relabel`: `classes[i]` becomes label i, and the model gets len(classes) outputs (a new head);
  - `train_per_class` = k (training split only): k examples of each class, drawn by `subset_seed`. Class c's
    examples are taken in the order of a permutation seeded by (subset_seed, c), so the k-shot set is part of
    the (k+1)-shot set and a class's draw does not depend on the others'.
  """
  classes, k, relabel = _check_selection(d, num_classes)
  if not classes and (k == -1 or split != d.train_split):
    return source
  labels = _labels(source)
  keep = np.flatnonzero(np.isin(labels, classes)) if classes else np.arange(len(labels))
  if k != -1 and split == d.train_split:
    picked = []
    for c in np.unique(labels[keep]):
      of_c = keep[labels[keep] == c]
      if len(of_c) < k:
        raise ConfigError(f"config.dataset.train_per_class={k} but class {c} of {d.name!r} split {split!r} has "
                          f"only {len(of_c)} examples")
      picked.append(np.random.default_rng((d.subset_seed, int(c))).permutation(of_c)[:k])
    keep = np.sort(np.concatenate(picked))
  return ClassSubset(source, keep, {c: i for i, c in enumerate(classes)} if relabel else None)


def _relabelled(info: DatasetInfo, d) -> DatasetInfo:
  """`info` with len(classes) classes (and their names) when `dataset.relabel` maps them to 0..n-1."""
  if not d.relabel or not d.classes:
    return info
  names = tuple(info.class_names[c] for c in d.classes) if info.class_names else ()
  return dataclasses.replace(info, num_classes=len(d.classes), class_names=names)


def eval_source(dataset_config, vocab: Optional[text.Vocab] = None):
  """The evaluation source: `dataset.eval_name` (e.g. imagenet_v2) if set, else `dataset.name`, on
  `dataset.eval_split`. Its label space must be the training data set's."""
  train_info = get_info(dataset_config, vocab)
  source, info = get_source(dataset_config, dataset_config.eval_split, name=dataset_config.eval_name,
                            vocab=vocab)
  if (info.num_classes, info.image_shape[-1:], info.input_shape) != (
      train_info.num_classes, train_info.image_shape[-1:], train_info.input_shape):
    raise ConfigError(f"config.dataset.eval_name={info.name!r} has {info.num_classes} classes and input "
                      f"{info.input_shape or info.image_shape[-1:]}; the training data set {train_info.name!r} has "
                      f"{train_info.num_classes} and {train_info.input_shape or train_info.image_shape[-1:]}")
  return source, train_info


def get_info(dataset_config, vocab: Optional[text.Vocab] = None) -> DatasetInfo:
  """The DatasetInfo of `dataset_config.name`, without opening any file (text: after reading its splits)."""
  name = dataset_config.name
  entry = registry.lookup(name)
  if entry.is_text:
    return entry.info(dataset_config, name, vocab)
  return _relabelled(entry.info(dataset_config, name), dataset_config)


def _synthetic_info(cfg) -> DatasetInfo:
  shape = tuple(cfg.synthetic.image_shape)
  return DatasetInfo("synthetic", int(cfg.synthetic.num_classes), shape, mean=(0.5,) * shape[-1],
                     std=(0.29,) * shape[-1], splits=("train", "test"))
