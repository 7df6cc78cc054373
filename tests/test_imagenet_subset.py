"""configs/imagenet_subset.py: its presets are wired end to end (mocked TFDS data, a few steps, a tiny net)."""
from unittest import mock

import numpy as np
import pytest

from configs import imagenet_subset


def test_recipes():
  c = imagenet_subset.get_config("1pct")
  assert c.dataset.name == "imagenet2012_subset/1pct" and c.model.name == "resnet50"
  assert c.num_epochs == 1000 and c.lr_boundaries_epochs == (700, 850, 950)
  assert c.dataset.eval_split == "validation" and c.eval_every_steps == -1
  assert imagenet_subset.get_config("10pct").dataset.name == "imagenet2012_subset/10pct"
  with pytest.raises(ValueError, match="known"):
    imagenet_subset.get_config("2pct")


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["1pct", "10pct", "imagenette"])
def test_preset_trains_and_evaluates_top5_under_mock_data(tmp_path, preset):
  import tensorflow_datasets as tfds
  from cnnjax.workdir import read_jsonl
  from cnnjax.train import loop
  c = imagenet_subset.get_config(preset)
  c.model.width = 0.0625              # the real ResNet-50 wiring, 1/16 of the filters
  c.model.stage_sizes = (1, 1, 1, 1)
  c.dataset.image_size = 32
  c.dataset.num_workers = 0            # the mock lives in this process only
  c.batch_size = c.eval_batch_size = 8
  c.num_train_steps = 2
  c.log_every_steps = 1
  c.progress_bar = False
  with tfds.testing.mock_data(num_examples=10), \
       mock.patch.object(tfds.core.DatasetBuilder, "is_prepared", return_value=True):
    last = loop.run(c, str(tmp_path))
    want_top1, want_top5 = _numpy_topk(c, tmp_path)
  assert np.isfinite(last["train"]["loss"])
  ev = [e for e in read_jsonl(str(tmp_path / "metrics.jsonl")) if e["split"] == "eval"]
  assert ev and all(e["count"] == 10 for e in ev)
  assert last["eval"]["top1"] == pytest.approx(want_top1) and last["eval"]["top5"] == pytest.approx(want_top5)


def _numpy_topk(c, workdir):
  """Top-1 and top-5 of the saved model on the eval split, recounted with numpy's argsort."""
  from cnnjax import checkpoint, data, models
  from cnnjax import config as config_lib
  state, _ = checkpoint.load_numpy(str(workdir))
  src, info = data.eval_source(c.dataset)
  model = models.create(c.model.name, num_classes=info.num_classes, **config_lib.model_options(c))
  hits = {1: 0, 5: 0}
  for batch in data.eval_dataset(c, src, info):
    logits = np.asarray(model.apply({"params": state["params"], "batch_stats": state["batch_stats"]},
                                    batch["image"], train=False), np.float64)
    ranked = np.argsort(-logits, axis=-1)
    for k in hits:
      hits[k] += int(((ranked[:, :k] == batch["label"][:, None]).any(-1) & batch["mask"]).sum())
  return hits[1] / len(src), hits[5] / len(src)
