"""Input pipeline: TFDS sources under tfds.testing.mock_data, transforms against hand-worked examples,
determinism, resume through an Orbax checkpoint, per-process sharding and padded evaluation."""
import os
from unittest import mock

import jax
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from cnnjax import data
from cnnjax.data import sources, transforms
from cnnjax.errors import ConfigError
from configs import default, resnet
from tests import helpers


def _config(name="synthetic", **dataset):
  c = default.get_config()
  c.dataset.name = name
  c.batch_size = 8
  c.eval_batch_size = 8
  c.dataset.image_size = 16
  c.dataset.num_threads = 1
  c.dataset.prefetch = 2
  for k, v in dataset.items():
    c.dataset[k] = v
  return c


class IdSource:
  """Example i is a 4x4x1 image filled with i // 256 and i % 256, labelled i % 10: ids survive 'none'."""

  def __init__(self, n):
    self.n = n

  def __len__(self):
    return self.n

  def __getitem__(self, i):
    image = np.zeros((4, 4, 1), np.uint8)
    image[:2], image[2:] = i // 256, i % 256
    return {"image": image, "label": i % 10}


ID_INFO = sources.DatasetInfo("ids", 10, (4, 4, 1), mean=(0.0,), std=(1 / 255,), splits=("train",))


def _ids(batch):
  """Recovers example ids from batches of IdSource images (normalised by mean 0, std 1/255: raw values)."""
  img = np.rint(batch["image"]).astype(np.int64)
  return img[:, 0, 0, 0] * 256 + img[:, 3, 0, 0]


def _id_config(**kw):
  return _config("digits", image_size=4, augment="none", **kw)


# --- TFDS under mock_data -------------------------------------------------------------------------------------
@pytest.fixture
def mock_tfds():
  """mock_data fakes the reading, not the prepared files, so `is_prepared` is patched to say they exist."""
  import tensorflow_datasets as tfds
  with tfds.testing.mock_data(num_examples=10), \
       mock.patch.object(tfds.core.DatasetBuilder, "is_prepared", return_value=True):
    yield tfds


@pytest.mark.parametrize("name,split,size,augment,eval_augment", [
    ("cifar10", "train[:90%]", 32, "pad_crop_flip", "none"),
    ("imagenette/320px-v2", "train", 24, "inception_crop_flip", "center_crop"),
    ("imagenet2012_subset/1pct", "train", 24, "inception_crop_flip", "center_crop"),
    ("mnist", "train", 28, "pad_crop", "none"),
])
def test_tfds_mock_pipeline(mock_tfds, name, split, size, augment, eval_augment):
  c = _config(name, image_size=size, augment=augment, eval_augment=eval_augment, train_split=split)
  src, info = data.get_source(c.dataset, split)
  assert len(src) == 10 and info.num_classes == sources.TFDS_FAMILIES[name.split("/")[0]].num_classes
  raw = mock_tfds.data_source(name, split=split, download=False)
  if info.image_shape[0] is None:   # variable sizes: the mock draws random ones, so resizing is exercised
    assert len({raw[i]["image"].shape for i in range(10)}) > 1
  channels = info.image_shape[-1]
  batch = next(iter(data.train_dataset(c, src, info)))
  assert batch["image"].shape == (8, size, size, channels) and batch["image"].dtype == np.uint8  # normalised on device
  assert set(batch["label"].tolist()) <= {int(raw[i]["label"]) for i in range(10)}
  evals = list(data.eval_dataset(c, src, info))
  assert [b["image"].shape for b in evals] == [(8, size, size, channels)] * 2
  assert sum(int(b["mask"].sum()) for b in evals) == 10
  labels = np.concatenate([b["label"] for b in evals])[:10]
  np.testing.assert_array_equal(labels, [int(raw[i]["label"]) for i in range(10)])


def test_tfds_eval_values_match_raw_records(mock_tfds):
  """cifar10 at native size, no augmentation: every pixel is (x / 255 - mean) / std of the raw TFDS record, after
  the pipeline's uint8 batches are normalised by `on_device` (jitted, as in the steps)."""
  c = _config("cifar10", image_size=32)
  src, info = data.get_source(c.dataset, "test")
  raw = mock_tfds.data_source("cifar10", split="test", download=False)
  prep = jax.jit(data.on_device(c, info))
  images = np.concatenate([prep(b)["image"] for b in data.eval_dataset(c, src, info)])[:10]
  want = np.stack([(raw[i]["image"] / 255.0 - np.float64(sources.TFDS_FAMILIES["cifar10"].mean))
                   / np.float64(sources.TFDS_FAMILIES["cifar10"].std) for i in range(10)])
  np.testing.assert_allclose(images, want, rtol=1e-5, atol=1e-5)


def test_imagenet_v2_eval_source(mock_tfds):
  c = resnet.get_config("imagenet_v2")
  src, info = data.eval_source(c.dataset)
  assert src.name == "imagenet_v2/matched-frequency" and src.split == "test"
  assert info.name == "imagenet2012" and info.num_classes == 1000


@pytest.mark.parametrize("name", ["cifar10", "imagenette/320px-v2", "imagenet2012", "imagenet2012_subset/10pct"])
def test_not_prepared_fails_at_once_with_the_command(tmp_path, name):
  import tensorflow_datasets as tfds
  c = _config(name, data_dir=str(tmp_path))
  with mock.patch.object(tfds.core.DatasetBuilder, "download_and_prepare",
                         side_effect=AssertionError("a download was attempted")):
    with pytest.raises(data.NotPreparedError) as e:
      data.get_source(c.dataset, "train")
  msg = str(e.value)
  assert repr(name) in msg and str(tmp_path) in msg
  assert f"tfds build {name} --file_format=array_record --data_dir={tmp_path}" in msg
  if name.startswith("imagenet2012"):
    assert f"{tmp_path}/downloads/manual" in msg and "ILSVRC2012_img_train.tar" in msg


def test_default_data_dir_follows_tfds_env(monkeypatch):
  monkeypatch.setenv("TFDS_DATA_DIR", "/some/where")
  assert sources.default_data_dir() == "/some/where"
  monkeypatch.delenv("TFDS_DATA_DIR")
  assert sources.default_data_dir() == os.path.expanduser("~/tensorflow_datasets")


@pytest.mark.parametrize("name", ["cifar1O", "imagenette/999px", "imagenet_resized", "digits/x"])
def test_bad_names_list_the_known_ones(name):
  with pytest.raises(ConfigError) as e:
    data.get_source(_config(name).dataset, "train")
  assert name in str(e.value)


# --- bad data -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("image,label,what", [
    (np.zeros((4, 4), np.uint8), 1, "shape (4, 4)"),
    (np.zeros((4, 4, 3), np.uint8), 1, "shape (4, 4, 3)"),
    (np.zeros((4, 4, 1), np.float32), 1, "dtype float32"),
    (np.zeros((4, 4, 1), np.uint8), 10, "label 10 is outside [0, 10)"),
    (np.zeros((4, 4, 1), np.uint8), -1, "label -1"),
    (b"not a jpeg", 1, "cannot be decoded"),
])
def test_bad_example_is_identified(image, label, what):
  class Src(IdSource):
    def __getitem__(self, i):
      return {"image": image, "label": label} if i == 3 else super().__getitem__(i)
  src = sources.CheckedSource(Src(6), "ids", "train", num_classes=10, channels=1)
  src[2]
  with pytest.raises(sources.BadExampleError) as e:
    src[3]
  assert "example 3 of data set 'ids' split 'train'" in str(e.value) and what in str(e.value)
  # Through the pipeline the error keeps its message.
  with pytest.raises(Exception, match="example 3 of data set 'ids'"):
    list(data.eval_dataset(_id_config(), src, ID_INFO))


# --- synthetic ------------------------------------------------------------------------------------------------
def test_synthetic_is_a_function_of_seed_split_index():
  c = _config(synthetic={"num_train": 20, "num_eval": 7, "num_classes": 3, "image_shape": (5, 6, 2),
                         "jpeg": False, "seed": 1})
  a, info = data.get_source(c.dataset, "train")
  b, _ = data.get_source(c.dataset, "train")
  t, _ = data.get_source(c.dataset, "test")
  assert (len(a), len(t), info.num_classes, info.image_shape) == (20, 7, 3, (5, 6, 2))
  for i in range(20):
    np.testing.assert_array_equal(a[i]["image"], b[i]["image"])
    assert a[i]["image"].shape == (5, 6, 2) and 0 <= a[i]["label"] < 3
  assert not np.array_equal(a[0]["image"], t[0]["image"])
  assert len({a[i]["label"] for i in range(20)}) == 3


def test_synthetic_jpeg_decodes_to_the_shape():
  c = _config(synthetic={"num_train": 4, "num_eval": 4, "num_classes": 5, "image_shape": (40, 30, 3),
                         "jpeg": True, "seed": 0})
  src, _ = data.get_source(c.dataset, "train")
  assert isinstance(src.source[0]["image"], bytes)
  assert src[0]["image"].shape == (40, 30, 3) and src[0]["image"].dtype == np.uint8


# --- transforms: hand-worked examples -------------------------------------------------------------------------
class StubRng:
  """Returns the given values in order from uniform/integers/random, so a crop can be worked by hand."""

  def __init__(self, *values):
    self.values = list(values)

  def uniform(self, lo, hi):
    return self.values.pop(0)

  def integers(self, lo, hi=None, size=None):
    return np.asarray([self.values.pop(0) for _ in range(size)]) if size else self.values.pop(0)

  def random(self):
    return self.values.pop(0)


def test_inception_crop_box_hand_worked():
  # Area 0.25 of 100x100 with aspect 1 (log-uniform draw 0) is 50x50; offsets drawn as 10 and 20.
  assert transforms.inception_crop_box(100, 100, StubRng(0.25, 0.0, 10, 20)) == (10, 20, 50, 50)
  # Aspect 4/3 on 0.75 of 60x80 (3600): w = sqrt(3600 * 4/3) = 69.28 -> 69, h = sqrt(3600 * 3/4) = 51.96 -> 52.
  assert transforms.inception_crop_box(60, 80, StubRng(0.75, np.log(4 / 3), 0, 11)) == (0, 11, 52, 69)
  # Ten misses (area 1 at aspect 4/3 never fits a 100x20 strip), then the central box of aspect 3/4: 27x20.
  assert transforms.inception_crop_box(100, 20, StubRng(*([1.0, np.log(4 / 3)] * 10))) == (36, 0, 27, 20)


@settings(max_examples=helpers.examples(60), deadline=None)
@given(h=st.integers(1, 400), w=st.integers(1, 400), seed=st.integers(0, 2**31))
def test_inception_crop_box_stays_inside_with_bounded_aspect(h, w, seed):
  top, left, bh, bw = transforms.inception_crop_box(h, w, np.random.default_rng(seed))
  assert 0 <= top and 0 <= left and 1 <= bh and 1 <= bw and top + bh <= h and left + bw <= w
  if min(bh, bw) >= 8:   # rounding to whole pixels moves small boxes' aspect ratios
    assert 3 / 4 * 0.9 <= bw / bh <= 4 / 3 * 1.1


def test_center_crop_hand_worked():
  # 40x80, fraction 0.875: side 35, top (40 - 35) // 2 = 2, left (80 - 35) // 2 = 22.
  assert transforms.center_crop_box(40, 80, 0.875) == (2, 22, 35, 35)
  image = np.zeros((40, 80, 3), np.uint8)
  image[2:37, 22:57] = 200          # exactly the box: an off-by-one crop would let a 0 in
  p = transforms.Preprocess(16, (0.5, 0.4, 0.3), (0.2, 0.25, 0.5), augment="center_crop")
  out = p.random_map({"image": image, "label": 3}, np.random.default_rng(0))
  want = (200 / 255 - np.array([0.5, 0.4, 0.3])) / np.array([0.2, 0.25, 0.5])
  np.testing.assert_allclose(out["image"], np.broadcast_to(want, (16, 16, 3)), rtol=1e-6)
  assert out["label"] == 3 and out["label"].dtype == np.int32


def test_pad_crop_and_flip_hand_worked():
  image = np.arange(1, 5, dtype=np.uint8).reshape(2, 2, 1)      # [[1, 2], [3, 4]]
  p = transforms.Preprocess(2, (0.0,), (1 / 255,), augment="pad_crop_flip", pad=1)
  out = p.random_map({"image": image, "label": 0}, StubRng(0, 1, 0.2))   # offset (0, 1), then flip
  # Padded [[0,0,0,0],[0,1,2,0],[0,3,4,0],[0,0,0,0]], rows 0-1 and columns 1-2: [[0,0],[1,2]]; flipped.
  np.testing.assert_allclose(out["image"][..., 0], [[0, 0], [2, 1]], atol=1e-4)
  out = p.random_map({"image": image, "label": 0}, StubRng(2, 2, 0.7))    # offset (2, 2), no flip
  np.testing.assert_allclose(out["image"][..., 0], [[4, 0], [0, 0]], atol=1e-4)


def test_fit_pad_centres_on_zeros_then_pad_crops():
  image = np.arange(1, 10, dtype=np.uint8).reshape(3, 3, 1)
  # 3x3 into 6x6: slack 3, one row/column above/left and two below/right.
  want = np.zeros((6, 6), np.uint8)
  want[1:4, 1:4] = image[..., 0]
  np.testing.assert_array_equal(transforms.pad_to(image, 6)[..., 0], want)
  p = transforms.Preprocess(6, (0.0,), (1 / 255,), augment="pad_crop", pad=1, fit="pad")
  out = p.random_map({"image": image, "label": 0}, StubRng(2, 0))   # crop offset (2, 0) of the 8x8 padding
  np.testing.assert_allclose(out["image"][..., 0], np.pad(want, 1)[2:8, 0:6], atol=1e-4)
  with pytest.raises(ValueError, match="3x3 pixels does not fit in dataset.image_size=2"):
    transforms.pad_to(image, 2)
  with pytest.raises(ConfigError, match="fit='pad' does not go with augment 'center_crop'"):
    transforms.Preprocess(6, (0.0,), (1.0,), augment="center_crop", fit="pad")


def test_resize_of_a_constant_image_is_constant():
  image = np.full((37, 23, 3), 77, np.uint8)
  for augment in ("none", "inception_crop_flip", "center_crop"):
    p = transforms.Preprocess(16, (0.0, 0.0, 0.0), (1 / 255,) * 3, augment=augment)
    out = p.random_map({"image": image, "label": 0}, np.random.default_rng(1))["image"]
    assert out.shape == (16, 16, 3)
    np.testing.assert_allclose(out, 77, atol=1e-3)


def test_resize_is_bilinear_with_half_pixel_centres_antialiased_when_shrinking():
  """The convention (PIL's BILINEAR, as torchvision's default): pixel centres at i + 0.5, a triangle filter
  whose width grows by the shrink factor (antialiasing), weights renormalised at the borders. Worked by hand;
  nearest-neighbour, bicubic or a plain (aliasing) bilinear shrink each give other values."""
  up = transforms.resize(np.array([[0, 80], [160, 240]], np.uint8)[..., None], 4)[..., 0]
  # Output centres at input positions 0.25, 0.75, 1.25, 1.75: weights (1, 0), (.75, .25), (.25, .75), (0, 1).
  np.testing.assert_array_equal(up, [[0, 20, 60, 80], [40, 60, 100, 120], [120, 140, 180, 200],
                                     [160, 180, 220, 240]])
  row = np.array([0, 70, 140, 210], np.uint8)
  down = transforms.resize(np.tile(row, (4, 1))[..., None], 2)[..., 0]
  # Shrinking by 2: output centres at 1 and 3, triangle half-width 2 over input centres 0.5 ... 3.5: weights
  # (.75, .75, .25, 0) / 1.75 and (0, .25, .75, .75) / 1.75 -> 50 and 160 (a plain bilinear shrink: 35, 175).
  np.testing.assert_array_equal(down, [[50, 160]] * 2)


@pytest.mark.parametrize("h,w,size", [(37, 23, 16), (7, 9, 20), (28, 28, 32)])
def test_resize_matches_jax_linear_antialiased(h, w, size):
  """jax.image.resize(method='linear', antialias=True) follows the same convention, in float: within 1 of
  the uint8 result (PIL rounds to uint8 in fixed point)."""
  image = np.random.default_rng(h).integers(0, 256, (h, w, 3), dtype=np.uint8)
  want = np.asarray(jax.image.resize(image.astype(np.float32), (size, size, 3), "linear", antialias=True))
  np.testing.assert_allclose(transforms.resize(image, size), want, atol=1.0)


def test_bad_augment_names_allowed():
  with pytest.raises(ConfigError, match="'crop'.*inception_crop_flip"):
    transforms.Preprocess(8, (0.0,), (1.0,), augment="crop")


def test_digits_train_statistics_near_the_table():
  """The table's digits mean is the training split's (computed here in float64); its std is not (0.376)."""
  src, info = data.get_source(_config("digits").dataset, "train")
  x = np.stack([src[i]["image"] for i in range(len(src))]).astype(np.float64) / 255
  assert abs(x.mean() - info.mean[0]) < 2e-3


# --- pipeline: determinism, epochs, resume, sharding, evaluation ----------------------------------------------
def _take(it, n):
  return [next(it) for _ in range(n)]


def test_same_seed_same_batches_other_seed_other_batches():
  c = _config(augment="inception_crop_flip")
  src, info = data.get_source(c.dataset, "train")
  a = _take(iter(data.train_dataset(c, src, info)), 3)
  b = _take(iter(data.train_dataset(c, src, info)), 3)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x["image"], y["image"])
    np.testing.assert_array_equal(x["label"], y["label"])
  c.seed = 1
  d = _take(iter(data.train_dataset(c, src, info)), 1)
  assert not np.array_equal(a[0]["image"], d[0]["image"])


def test_every_epoch_is_a_new_permutation():
  c = _id_config()
  ids = np.concatenate([_ids(b) for b in _take(iter(data.train_dataset(c, IdSource(24), ID_INFO)), 9)])
  epochs = ids.reshape(3, 24)
  for e in epochs:
    np.testing.assert_array_equal(np.sort(e), np.arange(24))
  assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])


def test_processes_read_disjoint_complete_shards():
  """Two simulated processes: global batch k is the one-process batch k, split without overlap."""
  c = _id_config()
  c.batch_size = 8
  one = _take(iter(data.train_dataset(c, IdSource(32), ID_INFO)), 8)
  per = [_take(iter(data.train_dataset(c, IdSource(32), ID_INFO, process_index=p, process_count=2)), 8)
         for p in range(2)]
  for k in range(8):
    a, b = _ids(per[0][k]), _ids(per[1][k])
    assert len(a) == len(b) == 4 and not set(a) & set(b)
    assert sorted(np.concatenate([a, b])) == sorted(_ids(one[k]))
  first_epoch = np.concatenate([_ids(per[p][k]) for p in range(2) for k in range(4)])
  np.testing.assert_array_equal(np.sort(first_epoch), np.arange(32))


@pytest.mark.parametrize("n,processes", [(21, 1), (21, 2), (16, 2), (3, 2)])
def test_eval_visits_every_example_once(n, processes):
  c = _id_config()
  c.eval_batch_size = 8
  seen, counts = [], []
  for p in range(processes):
    batches = list(data.eval_dataset(c, IdSource(n), ID_INFO, process_index=p, process_count=processes))
    counts.append(len(batches))
    for b in batches:
      assert b["image"].shape[0] == 8 // processes
      seen += _ids(b)[b["mask"]].tolist()
      assert (_ids(b)[~b["mask"]] == 0).all()
  assert len(set(counts)) == 1 and counts[0] == -(-n // 8)
  assert sorted(seen) == list(range(n))


def test_shard_arguments_are_checked():
  c = _id_config()
  with pytest.raises(ConfigError, match="batch_size=8 .* process count 3"):
    data.train_dataset(c, IdSource(8), ID_INFO, process_index=0, process_count=3)
  with pytest.raises(ValueError, match="process_index=2"):
    data.eval_dataset(c, IdSource(8), ID_INFO, process_index=2, process_count=2)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_stream_started_at_a_step_is_the_uninterrupted_stream(workers):
  """A run resumed at step k starts the stream at global batch k: the same batches an uninterrupted run sees
  from there, with any number of worker processes (the position is rebuilt from the step, not restored)."""
  c = _config(augment="pad_crop_flip", num_workers=0)
  src, info = data.get_source(c.dataset, "train")
  reference = _take(iter(data.train_dataset(c, src, info)), 7)
  c.dataset.num_workers = workers
  it = iter(data.train_dataset(c, src, info, start_step=3))
  resumed = _take(it, 4)
  if hasattr(it, "close"):
    it.close()
  assert not np.array_equal(reference[0]["label"], reference[3]["label"])  # the batches differ at all
  for x, r in zip(resumed, reference[3:]):
    np.testing.assert_array_equal(x["image"], r["image"])
    np.testing.assert_array_equal(x["label"], r["label"])


def test_local_batches_become_global_arrays_on_the_batch_axis():
  from cnnjax import parallel
  c = _id_config()
  batch = next(iter(data.train_dataset(c, IdSource(16), ID_INFO)))
  sharding = parallel.batch_sharded(parallel.mesh())
  g = parallel.global_batch(batch, sharding)
  assert isinstance(g["image"], jax.Array) and g["image"].shape == (8, 4, 4, 1)
  assert g["image"].sharding.spec == jax.sharding.PartitionSpec("data")
  np.testing.assert_array_equal(np.asarray(g["label"]), batch["label"])


@pytest.mark.parametrize("preset", resnet.PRESETS)
def test_presets_switch_data_and_input_size_together(preset):
  c = resnet.get_config(preset)
  info = data.get_info(c.dataset)
  size = c.dataset.image_size
  if info.image_shape[0] is not None and preset != "digits":
    assert size == info.image_shape[0]   # native size for fixed-size data sets
  transforms.Preprocess(size, info.mean, info.std, augment=c.dataset.augment)
  transforms.Preprocess(size, info.mean, info.std, augment=c.dataset.eval_augment)


def test_a_process_reads_only_its_shard():
  """With read-ahead off, process 0 of 2 reads exactly the examples of its own local batches."""
  class Counting(IdSource):
    def __init__(self, n):
      super().__init__(n)
      self.read = []

    def __getitem__(self, i):
      self.read.append(i)
      return super().__getitem__(i)

  c = _id_config(num_threads=0, prefetch=0)
  src = Counting(32)
  batches = _take(iter(data.train_dataset(c, src, ID_INFO, process_index=0, process_count=2)), 3)
  got = np.concatenate([_ids(b) for b in batches])
  assert sorted(src.read) == sorted(got.tolist()) and len(got) == 12
