"""The real TFDS path, no mock: a tiny builder prepared as ArrayRecord files in a temporary data_dir, read back
through cnnjax.data.get_source (not-prepared check, tfds.data_source, split slices, PNG decoding)."""
import io

import numpy as np
import pytest

from cnnjax import data
from cnnjax.data import registry, sources
from configs import default

N = 10


def _image(i):
  """Example i: a (5 + i) x 7 RGB image of a known pattern, label i % 3."""
  h = 5 + i
  return (np.arange(h * 7 * 3).reshape(h, 7, 3) * (i + 1) % 256).astype(np.uint8)


@pytest.fixture(scope="module")
def tiny_builder_name():
  import tensorflow_datasets as tfds
  from PIL import Image

  class CnnjaxTinyImages(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")
    code_path = None   # no checksums file beside the module (its lookup needs importlib_resources)

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          "image": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
          "label": tfds.features.ClassLabel(num_classes=3)}), disable_shuffling=True)

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples()}

    def _generate_examples(self):
      for i in range(N):
        buf = io.BytesIO()
        Image.fromarray(_image(i)).save(buf, format="PNG")
        yield i, {"image": buf.getvalue(), "label": i % 3}

  return CnnjaxTinyImages.name


@pytest.fixture
def tiny_family(monkeypatch, tiny_builder_name):
  monkeypatch.setitem(sources.TFDS_FAMILIES, tiny_builder_name,
                      sources.TfdsFamily(3, (None, None, 3), (0.0, 0.0, 0.0), (1 / 255,) * 3, ("train",)))
  monkeypatch.setitem(registry._REGISTRY, tiny_builder_name,   # registered as sources.py registers a TFDS family
                      registry.DataSet(tiny_builder_name, sources.tfds_source, lambda d, name: sources.tfds_info(name),
                                       configs=()))
  return tiny_builder_name


def test_prepared_array_record_files_are_read_lazily_with_slices(tmp_path, tiny_family):
  import tensorflow_datasets as tfds
  c = default.get_config()
  c.dataset.name, c.dataset.data_dir = tiny_family, str(tmp_path)
  with pytest.raises(data.NotPreparedError, match=f"tfds build {tiny_family} --file_format=array_record"):
    data.get_source(c.dataset, "train")
  tfds.builder(tiny_family, data_dir=str(tmp_path)).download_and_prepare(file_format="array_record")
  src, info = data.get_source(c.dataset, "train")
  assert len(src) == N and info.num_classes == 3
  for i in (0, 3, 9):
    np.testing.assert_array_equal(src[i]["image"], _image(i))
    assert src[i]["label"] == i % 3
  tail, _ = data.get_source(c.dataset, "train[60%:]")
  assert len(tail) == 4
  np.testing.assert_array_equal(tail[0]["image"], _image(6))
  c.dataset.image_size, c.eval_batch_size = 7, 4
  batches = list(data.eval_dataset(c, tail, info))
  assert sum(int(b["mask"].sum()) for b in batches) == 4 and batches[0]["image"].shape == (4, 7, 7, 3)
