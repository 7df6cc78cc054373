"""Real data on disk: MNIST/Fashion-MNIST IDX files and image folders, with files the tests write (bytes laid
out here by hand from the format's description), plus one test on the real Fashion-MNIST files when Debian's
dataset-fashion-mnist is installed."""
import gzip
import io
import logging
import os
import struct

import numpy as np
import pytest
from PIL import Image

from cnnjax import data
from cnnjax.data import folder, idx, sources
from cnnjax.errors import ConfigError
from configs import default

FASHION_DIR = "/usr/share/datasets/fashion-mnist"


def _config(name, data_dir, **dataset):
  c = default.get_config()
  c.dataset.name = name
  c.dataset.data_dir = str(data_dir)
  c.batch_size = c.eval_batch_size = 4
  c.dataset.num_threads = 1
  c.dataset.prefetch = 2
  for k, v in dataset.items():
    c.dataset[k].update(v) if isinstance(v, dict) else setattr(c.dataset, k, v)
  return c


@pytest.fixture(autouse=True)
def no_system_copy(monkeypatch, tmp_path):
  """The tests see only their own files, whether or not the Debian package is installed here."""
  monkeypatch.setitem(sources.IDX_SYSTEM_DIRS, "fashion_mnist", str(tmp_path / "no-system-copy"))


# --- IDX ------------------------------------------------------------------------------------------------------
def write_idx(path, array, magic=None, gz=True, cut=0):
  """An IDX file by the format's description: 0, 0, type 0x08, ndim, big-endian dims, the bytes."""
  body = struct.pack(">I", magic if magic is not None else 0x800 + array.ndim)
  body += struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
  body = body[:len(body) - cut]
  with (gzip.open if gz else open)(path, "wb") as f:
    f.write(body)


def write_mnist(directory, n_train=7, n_test=3, gz=True, seed=0):
  rng = np.random.default_rng(seed)
  os.makedirs(directory, exist_ok=True)
  out = {}
  for split, n in (("train", n_train), ("test", n_test)):
    images, labels = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)
    stem_i, stem_l = idx.FILES[split]
    write_idx(os.path.join(directory, stem_i + (".gz" if gz else "")), images, gz=gz)
    write_idx(os.path.join(directory, stem_l + (".gz" if gz else "")), labels, gz=gz)
    out[split] = images, labels
  return out


@pytest.mark.parametrize("name", ["fashion_mnist", "mnist"])
@pytest.mark.parametrize("gz", [True, False])
def test_idx_files_read_back_exactly(tmp_path, name, gz):
  written = write_mnist(tmp_path, gz=gz)
  c = _config(name, tmp_path)
  for split in ("train", "test"):
    src, info = data.get_source(c.dataset, split)
    images, labels = written[split]
    assert len(src) == len(labels) and info.image_shape == (28, 28, 1)
    for i in range(len(src)):
      np.testing.assert_array_equal(src[i]["image"], images[i][..., None])
      assert src[i]["label"] == labels[i]
  # TFDS split slices select the same examples.
  src, _ = data.get_source(c.dataset, "train[2:5]+test[-1:]")
  got = [src[i]["label"] for i in range(len(src))]
  assert got == [*written["train"][1][2:5], written["test"][1][-1]]
  np.testing.assert_array_equal(src[3]["image"][..., 0], written["test"][0][-1])


def test_idx_pipeline_normalises_with_the_data_sets_statistics(tmp_path):
  written = write_mnist(tmp_path, n_test=5)
  c = _config("fashion_mnist", tmp_path, image_size=28)
  src, info = data.get_source(c.dataset, "test")
  prep = data.on_device(c, info)   # the uint8 batches' normalisation, as the steps apply it
  batch = np.concatenate([prep(b)["image"] for b in data.eval_dataset(c, src, info)])[:5]
  want = (written["test"][0][..., None] / 255.0 - 0.2860) / 0.3530
  np.testing.assert_allclose(batch, want, rtol=1e-5, atol=1e-5)


def test_fashion_mnist_falls_back_to_the_system_directory(tmp_path, monkeypatch):
  """With no files in data_dir (neither TFDS-prepared nor IDX), Fashion-MNIST is read from the system directory
  (Debian's package's place, pointed here at files this test writes); IDX files in data_dir come first."""
  system = write_mnist(tmp_path / "system", seed=1)
  monkeypatch.setitem(sources.IDX_SYSTEM_DIRS, "fashion_mnist", str(tmp_path / "system"))
  (tmp_path / "empty").mkdir()
  src, info = data.get_source(_config("fashion_mnist", tmp_path / "empty").dataset, "test")
  assert info.num_classes == 10 and len(src) == len(system["test"][1])
  for i in range(len(src)):
    np.testing.assert_array_equal(src[i]["image"][..., 0], system["test"][0][i])
    assert src[i]["label"] == system["test"][1][i]
  own = write_mnist(tmp_path / "own", n_test=4, seed=2)
  src, _ = data.get_source(_config("fashion_mnist", tmp_path / "own").dataset, "test")
  assert [src[i]["label"] for i in range(len(src))] == list(own["test"][1])


@pytest.mark.parametrize("damage,message", [
    ("truncated", "the header gives shape (7, 28, 28), 5488 bytes of data, but the file holds 5388: truncated"),
    ("truncated_gzip", "the gzip stream is damaged or truncated"),
    ("magic", "magic number 0x00000801, expected 0x00000803 (uint8, 3 dimensions): not an IDX image file"),
    ("float_type", "magic number 0x00000d03, expected 0x00000803"),
    ("count", "holds 7 images but"),
    ("size", "images of 28x27 pixels, expected 28x28"),
])
def test_damaged_idx_files_name_the_file(tmp_path, damage, message):
  write_mnist(tmp_path)
  images = np.zeros((7, 28, 28), np.uint8)
  path = tmp_path / "train-images-idx3-ubyte.gz"
  if damage == "truncated":
    write_idx(path, images, cut=100)
  elif damage == "truncated_gzip":
    write_idx(path, images)
    path.write_bytes(path.read_bytes()[:-30])
  elif damage == "magic":           # a label file under the image file's name
    write_idx(path, images, magic=0x801)
  elif damage == "float_type":
    write_idx(path, images, magic=0xD03)
  elif damage == "count":
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(6, np.uint8))
  elif damage == "size":
    write_idx(path, np.zeros((7, 28, 27), np.uint8))
  with pytest.raises(idx.IdxError) as e:
    data.get_source(_config("fashion_mnist", tmp_path).dataset, "train")
  assert str(path) in str(e.value) and message in str(e.value)
  assert isinstance(e.value, ConfigError)


def test_label_outside_the_classes_names_the_file(tmp_path):
  write_mnist(tmp_path)
  write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([1, 10, 2], np.uint8))
  with pytest.raises(idx.IdxError, match="t10k-labels-idx1-ubyte.gz: label 10 at index 1 is outside"):
    data.get_source(_config("fashion_mnist", tmp_path).dataset, "test")


def test_some_idx_files_missing_is_an_error_not_a_fallback(tmp_path):
  write_mnist(tmp_path)
  os.remove(tmp_path / "t10k-labels-idx1-ubyte.gz")
  with pytest.raises(sources.DataNotFoundError, match=r"but not \['t10k-labels-idx1-ubyte'\]"):
    data.get_source(_config("fashion_mnist", tmp_path).dataset, "train")


def test_not_found_names_both_ways_to_get_it(tmp_path):
  with pytest.raises(ConfigError) as e:
    data.get_source(_config("fashion_mnist", tmp_path).dataset, "train")
  msg = str(e.value)
  assert "`apt-get install dataset-fashion-mnist`" in msg
  assert "`tfds build fashion_mnist --file_format=array_record --data_dir=<DIR>`" in msg
  assert f"TFDS-prepared files in {tmp_path}" in msg and f"the IDX files in {tmp_path}" in msg


def test_not_found_stops_the_run_before_anything_is_built(tmp_path, make_config):
  from cnnjax.train import loop
  c = make_config(**{"dataset.name": "fashion_mnist", "dataset.data_dir": str(tmp_path / "empty")})
  with pytest.raises(sources.DataNotFoundError, match="apt-get install dataset-fashion-mnist"):
    loop.run(c, str(tmp_path / "w"))
  assert not os.path.exists(tmp_path / "w")


def test_a_tfds_prepared_copy_comes_first(tmp_path):
  """With both a (mocked) TFDS-prepared copy and IDX files in data_dir, the TFDS copy is read."""
  from unittest import mock
  import tensorflow_datasets as tfds
  write_mnist(tmp_path, n_train=7)
  with tfds.testing.mock_data(num_examples=10), \
       mock.patch.object(tfds.core.DatasetBuilder, "is_prepared", return_value=True):
    src, _ = data.get_source(_config("fashion_mnist", tmp_path).dataset, "train")
  assert len(src) == 10


def test_lenet_preset_centres_fashion_mnist_in_32x32(tmp_path):
  """configs/lenet.py:fashion_mnist feeds LeNet-5 the 28x28 images unscaled on a 32x32 zero field."""
  from configs import lenet
  written = write_mnist(tmp_path, n_test=3)
  c = lenet.get_config("fashion_mnist")
  c.dataset.data_dir = str(tmp_path)
  c.eval_batch_size = 4
  src, info = data.eval_source(c.dataset)
  images = data.on_device(c, info)(next(iter(data.eval_dataset(c, src, info))))["image"][:3, ..., 0]
  want = np.zeros((3, 32, 32))
  want[:, 2:30, 2:30] = written["test"][0]
  np.testing.assert_allclose(images, (want / 255 - 0.2860) / 0.3530, rtol=1e-5, atol=1e-5)


# --- image folders --------------------------------------------------------------------------------------------
def _png(path, array):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(array).save(path, format="PNG")


def _jpeg_bytes(array):
  buf = io.BytesIO()
  Image.fromarray(array).save(buf, format="JPEG", quality=90)
  return buf.getvalue()


def write_folder(root, classes=("zebra", "apple", "Mouse"), per_class=(3, 2), seed=0):
  """root/{train,val}/<class>/: PNGs (RGB) and one JPEG per class in train; returns {path: array} of the PNGs."""
  rng = np.random.default_rng(seed)
  arrays = {}
  for split, n in zip(("train", "val"), per_class):
    for name in classes:
      for k in range(n):
        a = rng.integers(0, 256, (6 + k, 5, 3), dtype=np.uint8)
        path = os.path.join(root, split, name, f"img{k}.png")
        _png(path, a)
        arrays[path] = a
      if split == "train":
        with open(os.path.join(root, split, name, "photo.jpg"), "wb") as f:
          f.write(_jpeg_bytes(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)))
  return arrays


def _folder_config(root, **folder_options):
  return _config("folder", root, eval_split="val", folder=folder_options or {})


def test_folder_classes_sorted_and_pixels_exact(tmp_path):
  arrays = write_folder(tmp_path)
  c = _folder_config(tmp_path)
  src, info = data.get_source(c.dataset, "train")
  assert info.class_names == ("Mouse", "apple", "zebra") and info.num_classes == 3   # sorted(), as ImageFolder
  assert len(src) == 3 * 4
  for i in range(len(src)):
    path = src.source.example_path(i)
    assert src[i]["label"] == info.class_names.index(path.split(os.sep)[-2])
    if path in arrays:
      np.testing.assert_array_equal(src[i]["image"], arrays[path])
  assert isinstance(src.source[0]["image"], bytes)    # decoded per example, not up front


def test_folder_grey_channel(tmp_path):
  grey = np.arange(30, dtype=np.uint8).reshape(6, 5) * 8
  for split in ("train", "val"):
    _png(str(tmp_path / split / "a" / "x.png"), grey)
  c = _folder_config(tmp_path, channels=1)
  src, info = data.get_source(c.dataset, "val")
  assert info.image_shape == (None, None, 1)
  np.testing.assert_array_equal(src[0]["image"], grey[..., None])


def _add_bad_files(root):
  """A truncated JPEG (its header intact), a text file and random bytes named .png."""
  good = _jpeg_bytes(np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8))
  bad = {"truncated": os.path.join(root, "train", "Mouse", "truncated.jpg"),
         "text": os.path.join(root, "train", "apple", "notes.txt"),
         "noise": os.path.join(root, "train", "zebra", "noise.png")}
  with open(bad["truncated"], "wb") as f:
    f.write(good[:len(good) // 2])
  with open(bad["text"], "w") as f:
    f.write("not an image")
  with open(bad["noise"], "wb") as f:
    f.write(np.random.default_rng(2).bytes(300))
  return bad


def test_folder_stop_names_the_bad_files(tmp_path):
  write_folder(tmp_path)
  bad = _add_bad_files(tmp_path)
  with pytest.raises(folder.BadFileError) as e:
    data.get_source(_folder_config(tmp_path).dataset, "train")
  msg = str(e.value)
  assert "2 bad file(s) in split 'train'" in msg
  assert f"{bad['text']}: not an image file extension" in msg and f"{bad['noise']}: UnidentifiedImageError" in msg
  # The truncated JPEG's header is sound: 'stop' finds it when the pipeline decodes it, and names it.
  os.remove(bad["text"]), os.remove(bad["noise"])
  src, _ = data.get_source(_folder_config(tmp_path).dataset, "train")
  i = src.source.paths.index(bad["truncated"])
  with pytest.raises(data.BadExampleError, match=f"split 'train' \\({bad['truncated']}\\): the image cannot be "
                                                 "decoded.*truncated"):
    src[i]


def test_folder_skip_leaves_out_and_counts_the_bad_files(tmp_path, caplog):
  write_folder(tmp_path)
  bad = _add_bad_files(tmp_path)
  with caplog.at_level(logging.WARNING, logger="cnnjax"):
    src, _ = data.get_source(_folder_config(tmp_path, on_bad_file="skip").dataset, "train")
  assert len(src) == 12 and not set(bad.values()) & set(src.source.paths)
  [warning] = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
  assert "skipped 3 bad file(s) of 15" in warning and all(p in warning for p in bad.values())
  for i in range(len(src)):
    src[i]                            # every kept file decodes


def test_folder_class_missing_from_a_split(tmp_path):
  write_folder(tmp_path)
  for name in os.listdir(tmp_path / "val" / "zebra"):
    os.remove(tmp_path / "val" / "zebra" / name)
  os.rmdir(tmp_path / "val" / "zebra")
  c = _folder_config(tmp_path)
  with pytest.raises(ConfigError, match=r"split 'val' lacks class\(es\) \['zebra'\] of split 'train'"):
    data.eval_source(c.dataset)
  os.makedirs(tmp_path / "val" / "zebra")     # present but empty: no usable images
  with pytest.raises(ConfigError, match=r"split 'val' has no usable images of classes \['zebra'\]"):
    data.eval_source(c.dataset)


@pytest.mark.parametrize("field,value,message", [
    ("on_bad_file", "ignore", "config.dataset.folder.on_bad_file='ignore' is invalid: one of ('stop', 'skip')"),
    ("channels", 4, "config.dataset.folder.channels=4 is invalid: 1 (grey) or 3 (RGB)"),
    ("mean", (0.5,), "config.dataset.folder.mean=(0.5,) is invalid: 3 value(s)"),
])
def test_folder_options_checked(tmp_path, field, value, message):
  write_folder(tmp_path)
  with pytest.raises(ConfigError) as e:
    data.get_source(_folder_config(tmp_path, **{field: value}).dataset, "train")
  assert message in str(e.value)


def test_folder_missing_split_lists_the_present_ones(tmp_path):
  write_folder(tmp_path)
  with pytest.raises(ConfigError, match=r"no split directory 'test'.*present: \['train', 'val'\]"):
    data.get_source(_config("folder", tmp_path).dataset, "test")


@pytest.mark.slow
def test_folder_decodes_in_worker_processes_as_in_the_main_one(tmp_path):
  write_folder(tmp_path)
  c = _folder_config(tmp_path)
  c.dataset.image_size = 8
  c.dataset.augment = "pad_crop_flip"
  src, info = data.get_source(c.dataset, "train")
  take = lambda it: [next(it) for _ in range(4)]
  main = take(iter(data.train_dataset(c, src, info)))
  c.dataset.num_workers = 2
  it = iter(data.train_dataset(c, src, info))
  workers = take(it)
  it.close() if hasattr(it, "close") else None
  for a, b in zip(main, workers):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])


# --- end to end -----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_fashion_mnist_idx_files_train_end_to_end(tmp_path, make_config):
  from cnnjax.train import loop
  write_mnist(tmp_path / "fm", n_train=64, n_test=20)
  c = make_config(**{"dataset.name": "fashion_mnist", "dataset.data_dir": str(tmp_path / "fm"),
                     "num_train_steps": 2, "eval_every_steps": 2, "checkpoint_every_steps": 2})
  last = loop.run(c, str(tmp_path / "w"))
  assert np.isfinite(last["train"]["loss"]) and last["eval"]["count"] == 20


@pytest.mark.slow
def test_image_folder_trains_end_to_end(tmp_path, make_config):
  from cnnjax.train import loop
  write_folder(tmp_path / "imgs", classes=("b", "a"), per_class=(16, 5))
  c = make_config(**{"dataset.name": "folder", "dataset.data_dir": str(tmp_path / "imgs"),
                     "dataset.eval_split": "val", "num_train_steps": 2, "eval_every_steps": 2,
                     "checkpoint_every_steps": 2})
  last = loop.run(c, str(tmp_path / "w"))
  assert np.isfinite(last["train"]["loss"]) and last["eval"]["count"] == 10


# --- the real Fashion-MNIST files (Debian's dataset-fashion-mnist) -----------------------------------------------
@pytest.mark.skipif(not all(idx.find(FASHION_DIR, s) for s in idx.FILES),
                    reason=f"Debian's dataset-fashion-mnist is not installed ({FASHION_DIR} lacks the IDX files; "
                           "apt-get install dataset-fashion-mnist)")
def test_real_fashion_mnist(monkeypatch):
  monkeypatch.setitem(sources.IDX_SYSTEM_DIRS, "fashion_mnist", FASHION_DIR)
  c = default.get_config()
  c.dataset.name = "fashion_mnist"
  train, info = data.get_source(c.dataset, "train")
  test, _ = data.get_source(c.dataset, "test")
  assert (len(train), len(test)) == (60_000, 10_000)
  images, labels = train.source.images, train.source.labels
  np.testing.assert_array_equal(np.bincount(labels, minlength=10), [6000] * 10)
  np.testing.assert_array_equal(np.bincount(test.source.labels, minlength=10), [1000] * 10)
  # The first training image is an ankle boot (class 9); its pixel sum, 76,247, was computed once from the
  # gunzipped file with numpy (np.frombuffer(..., offset=16)[:784].sum()); the first test image: 9, 33,456.
  assert train[0]["label"] == 9 and int(train[0]["image"].sum()) == 76_247
  assert test[0]["label"] == 9 and int(test[0]["image"].sum()) == 33_456
  # The data set's table statistics are those of this training split.
  v = np.arange(256) / 255.0                           # moments in float64 from the pixel-value histogram
  p = np.bincount(images.ravel(), minlength=256) / images.size
  mean = p @ v
  assert abs(mean - info.mean[0]) < 1e-4 and abs(np.sqrt(p @ v**2 - mean**2) - info.std[0]) < 1e-4
