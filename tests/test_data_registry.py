"""The data set registry: a registered name reaches its own source and info (image ones checked and selected,
text ones handed the vocabulary), families answer 'name/<config>', an unknown name lists every registered one,
the names served are exactly those of the dispatch it replaced, and every data set that is not there fails with
the one not-prepared message."""
import ast

import numpy as np
import pytest

from cnnjax import data
from cnnjax.data import registry, sources, text
from cnnjax.data.base import DatasetInfo
from cnnjax.data.transforms import BadExampleError
from cnnjax.errors import ConfigError
from configs import default

IMAGES = np.arange(4 * 2 * 2, dtype=np.uint8).reshape(4, 2, 2, 1)


def _image_set(name, labels, num_classes):
  """(source, info) functions of a tiny image data set whose info also says which function made it."""
  info = DatasetInfo(name, num_classes, (2, 2, 1), (0.5,), (0.25,), ("train", "test"))
  calls = []

  def source(d, split, asked):
    calls.append(("source", split, asked))
    return sources.ArraySource(IMAGES, np.asarray(labels, np.int32)), info

  def info_fn(d, asked):
    calls.append(("info", asked))
    return info
  return source, info_fn, info, calls


@pytest.fixture
def fresh(monkeypatch):
  """The registry as it is, restored after the test (registrations made in it do not leak)."""
  monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
  return registry


def _config(name, **dataset):
  c = default.get_config()
  c.dataset.name = name
  for k, v in dataset.items():
    c.dataset[k] = v
  return c.dataset


def test_a_registered_name_dispatches_to_its_own_source_and_info(fresh):
  src_a, info_a, want_a, calls_a = _image_set("toy_a", [0, 1, 2, 0], 3)
  src_b, info_b, want_b, calls_b = _image_set("toy_b", [1, 1, 0, 0], 2)
  fresh.register("toy_a", src_a, info_a)
  fresh.register("toy_b", src_b, info_b)
  got, info = data.get_source(_config("toy_b"), "test")
  assert info == want_b and calls_a == [] and calls_b == [("source", "test", "toy_b")]
  assert [got[i]["label"] for i in range(4)] == [1, 1, 0, 0]
  np.testing.assert_array_equal(got[3]["image"], IMAGES[3])
  assert data.get_info(_config("toy_a")) == want_a and calls_a == [("info", "toy_a")]
  assert not data.is_text("toy_a")
  # An image entry's records are checked and selected like every image data set's.
  d = _config("toy_a", classes=(2, 0), relabel=True)
  got, info = data.get_source(d, "train")
  assert [got[i]["label"] for i in range(len(got))] == [1, 0, 1] and info.num_classes == 2
  assert data.get_info(d).num_classes == 2
  bad, _, _, _ = _image_set("toy_bad", [0, 5, 0, 0], 3)
  fresh.register("toy_bad", bad, info_a)
  with pytest.raises(BadExampleError, match="label 5 is outside"):
    data.get_source(_config("toy_bad"), "train")[0][1]


def test_a_text_entry_gets_the_vocabulary_and_its_records_untouched(fresh):
  vocab = text.Vocab(("<pad>", "<unk>", "a"), 3, True)
  info = DatasetInfo("toy_text", 2, (), (), (), ("train",), input_shape=(3,), input_dtype="int32")
  records = [{"tokens": np.array([2, 0, 0], np.int32), "label": np.int32(1)}]
  seen = []
  fresh.register("toy_text", lambda d, split, name, v: (seen.append(("source", v)) or records, info),
                 lambda d, name, v: seen.append(("info", v)) or info, kind="text")
  assert data.is_text("toy_text") and data.is_text("sentences/mr") and not data.is_text("digits")
  got, got_info = data.get_source(_config("toy_text"), "train", vocab=vocab)
  assert got is records and got_info is info
  assert data.get_info(_config("toy_text"), vocab) is info and seen == [("source", vocab), ("info", vocab)]


def test_a_family_answers_its_configs_and_a_plain_name_does_not(fresh):
  src, info_fn, want, calls = _image_set("toy_fam", [0, 1, 0, 1], 2)
  fresh.register("toy_fam", src, info_fn, configs=("small", "large"))
  fresh.register("toy_plain", src, info_fn)
  assert "toy_fam/small" in data.known_names() and "toy_fam" not in data.known_names()
  data.get_source(_config("toy_fam/large"), "train")
  assert calls == [("source", "train", "toy_fam/large")]
  with pytest.raises(ConfigError, match="unknown data set dataset.name='toy_plain/small'"):
    data.get_source(_config("toy_plain/small"), "train")


def test_an_unknown_name_lists_every_registered_name(fresh):
  src, info_fn, _, _ = _image_set("toy_listed", [0, 0, 0, 0], 1)
  fresh.register("toy_listed", src, info_fn)
  for call in (lambda d: data.get_source(d, "train"), data.get_info, lambda d: data.is_text(d.name)):
    with pytest.raises(ConfigError) as e:
      call(_config("no_such_set"))
    listed = str(e.value).split("Known: ")[1]
    assert ast.literal_eval(listed) == registry.names()   # the list as printed
  assert {"toy_listed", "digits", "sentences/mr", "glue/sst2", "imagenette/320px-v2"} <= set(registry.names())


def test_registering_twice_or_an_unknown_kind_is_refused(fresh):
  with pytest.raises(ValueError, match="'digits' is registered twice"):
    fresh.register("digits", sources.folder_source, sources.folder_info)
  with pytest.raises(ValueError, match="kind 'audio'"):
    fresh.register("toy_audio", sources.folder_source, sources.folder_info, kind="audio")


def test_the_names_served_are_those_of_the_dispatch_it_replaced():
  """The names and functions of the former DATASETS dict, get_info if-chain and TEXT_NAMES, written out."""
  tfds = {"mnist": (), "fashion_mnist": (), "cifar10": (), "cifar100": (),
          "imagenette": ("full-size", "320px", "160px", "full-size-v2", "320px-v2", "160px-v2"),
          "imagenet2012": (), "imagenet2012_subset": ("1pct", "10pct"),
          "imagenet_resized": ("8x8", "16x16", "32x32", "64x64"),
          "imagenet_v2": ("matched-frequency", "threshold-0.7", "top-images")}
  texts = ["sentences/mr", "sentences/subj", "sentences/cr", "sentences/mpqa", "sentences/trec", "sentences/sst2",
           "sentences/sst1", "glue/sst2", "trec"]
  want = ["digits", "synthetic", "folder", *texts]
  want += [n for f, cs in tfds.items() for n in ([f"{f}/{c}" for c in cs] or [f])]
  assert data.known_names() == sorted(want)
  for f in tfds:
    entry = registry.lookup(f"{f}/x" if tfds[f] else f)
    assert entry.source is (sources.idx_source if f in ("mnist", "fashion_mnist") else sources.tfds_source)
  assert registry.lookup("folder").source is sources.folder_source
  for n in texts:
    assert registry.lookup(n).source is text.text_source and registry.lookup(n).is_text
  for n in ("digits", "synthetic", "folder"):
    with pytest.raises(ConfigError, match="unknown data set"):
      registry.lookup(f"{n}/x")


def test_every_missing_data_set_fails_with_the_one_message(tmp_path, monkeypatch):
  """TFDS, IDX, line-file and TFDS text data sets, none prepared in an empty data_dir: the same wording, the
  place searched, a way to prepare it; a ConfigError (printed without a traceback) and a FileNotFoundError."""
  monkeypatch.setitem(sources.IDX_SYSTEM_DIRS, "fashion_mnist", str(tmp_path / "no-system-copy"))
  for name, how in (("cifar10", f"tfds build cifar10 --file_format=array_record --data_dir={tmp_path}"),
                    ("fashion_mnist", "apt-get install dataset-fashion-mnist"),
                    ("sentences/mr", "set config.dataset.data_dir"),
                    ("glue/sst2", f"tfds build glue/sst2 --file_format=array_record --data_dir={tmp_path}")):
    with pytest.raises(data.NotPreparedError) as e:
      data.get_source(_config(name, data_dir=str(tmp_path)), "train")
    msg = str(e.value)
    assert isinstance(e.value, ConfigError) and isinstance(e.value, FileNotFoundError)
    assert msg.startswith(f"data set {name!r} is not prepared; searched ") and str(tmp_path) in msg
    assert "Nothing is downloaded at training time. To prepare it" in msg and how in msg
