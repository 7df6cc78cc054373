"""End to end under tfds.testing.mock_data: the `imagenette` preset (random-sized images, random-resized crops,
center-crop evaluation) trains, evaluates every example once and checkpoints through cnnjax.train.loop."""
from unittest import mock

import numpy as np
import pytest


@pytest.mark.slow
def test_imagenette_preset_trains_under_mock_data(tmp_path):
  import tensorflow_datasets as tfds
  from cnnjax.train import loop
  from configs import resnet
  c = resnet.get_config("imagenette")
  c.model.width = 0.125
  c.model.stage_sizes = (1, 1, 1, 1)
  c.dataset.image_size = 32
  c.dataset.num_workers = 0             # the mock lives in this process only
  c.batch_size = 8
  c.eval_batch_size = 8
  c.num_train_steps = 2
  c.log_every_steps = 1
  c.progress_bar = False
  with tfds.testing.mock_data(num_examples=12), \
       mock.patch.object(tfds.core.DatasetBuilder, "is_prepared", return_value=True):
    last = loop.run(c, str(tmp_path))
  assert np.isfinite(last["train"]["loss"])
  assert last["eval"]["count"] == 12     # 12 examples in 2 padded batches of 8, each counted once
