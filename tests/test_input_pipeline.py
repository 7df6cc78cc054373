"""The host's share of the input pipeline: uint8 batches normalised on the device, and JPEGs decoded at reduced
scale when the random crop allows it."""
import dataclasses
import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from cnnjax import data, models
from cnnjax import config as config_lib
from cnnjax.data import sources, transforms
from cnnjax.train import optim, state as state_lib, steps
from tests.helpers import tiny_config


def _synthetic_config(**fields):
  c = tiny_config(**{"dataset.name": "synthetic", "dataset.image_size": 16, "dataset.augment": "inception_crop_flip",
                     "batch_size": 8, **fields})
  c.dataset.synthetic.update(num_train=32, num_eval=8, image_shape=(40, 48, 3), jpeg=True)
  return c


def _first_batch(c):
  """The first training batch, with ImageNet's per-channel statistics (distinct channels, unlike synthetic's)."""
  src, info = data.get_source(c.dataset, "train")
  info = dataclasses.replace(info, mean=sources.IMAGENET_MEAN, std=sources.IMAGENET_STD)
  return next(iter(data.train_dataset(c, src, info))), info


@pytest.mark.slow   # two compilations of a small ResNet
def test_uint8_batches_normalised_on_device_give_the_float_paths_loss_and_update():
  """The same training batch (same crops and flips) through both paths: the workers' float32 normalisation
  (`normalize_on_device=False`, the former path) and uint8 batches normalised inside the jitted step. The
  device's images equal the numpy float64 reference (x / 255 - mean) / std to float32 rounding, and the train
  step's loss, gradient norm and updated parameters equal the float path's. Catches a wrong mean/std, a missing
  /255, channels swapped, or a step that feeds the raw uint8 images to the model."""
  c = _synthetic_config()
  c_old = _synthetic_config(**{"dataset.normalize_on_device": False})
  new, info = _first_batch(c)
  old, _ = _first_batch(c_old)
  assert new["image"].dtype == np.uint8 and old["image"].dtype == np.float32
  ref = (new["image"] / 255.0 - np.float64(info.mean)) / np.float64(info.std)
  np.testing.assert_allclose(old["image"], ref, rtol=0, atol=2e-6)      # the host path: same crops
  prep = data.on_device(c, info)
  np.testing.assert_allclose(jax.jit(prep)(new)["image"], ref, rtol=0, atol=2e-6)

  model = models.create(c.model.name, num_classes=info.num_classes, **config_lib.model_options(c))
  tx, schedule = optim.build(c, 4, 8)
  state = state_lib.create(jax.random.PRNGKey(0), model, tx, (16, 16, 3))
  step = steps.make_train_step(model, tx, schedule)
  s_new, m_new = jax.jit(lambda s, b: step(s, prep(b)))(state, new)
  s_old, m_old = jax.jit(step)(state, old)
  for k in ("loss", "top1", "grad_norm"):
    np.testing.assert_allclose(m_new[k], m_old[k], rtol=1e-5, err_msg=k)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), s_new.params, s_old.params)


def test_text_batches_are_not_touched_by_the_device_stage():
  """Token ids are model inputs already: `on_device` returns them as they are (an int normaliser would turn ids
  into floats)."""
  c = tiny_config()
  info = sources.DatasetInfo("text", 2, (None, None, 1), (0.5,), (0.25,), ("train",), input_shape=(7,),
                             input_dtype="int32")
  batch = {"tokens": jnp.arange(14, dtype=jnp.int32).reshape(2, 7), "label": jnp.zeros(2, jnp.int32)}
  out = jax.jit(data.on_device(c, info))(batch)
  assert set(out) == {"tokens", "label"} and out["tokens"].dtype == jnp.int32
  np.testing.assert_array_equal(out["tokens"], batch["tokens"])


# --- reduced-scale decoding ---------------------------------------------------------------------------------
@pytest.mark.parametrize("box,size,want", [
    ((0, 0, 448, 500), 224, 2),      # both sides >= 2 x 224, not 4 x
    ((3, 5, 447, 900), 224, 1),      # the height is 1 pixel short of 2 x 224
    ((0, 0, 1792, 1800), 224, 8),    # 8 x 224 = 1792
    ((0, 0, 1000, 1000), 224, 4),
])
def test_draft_scale_hand_worked(box, size, want):
  assert transforms.draft_scale(box, size) == want


def _jpeg(height, width, seed):
  """A photo-like JPEG: a smooth random picture with noise (sources.SyntheticSource's recipe)."""
  rng = np.random.default_rng(seed)
  coarse = rng.integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8)
  smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC))
  texture = np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8)
  buf = io.BytesIO()
  Image.fromarray(texture).save(buf, format="JPEG", quality=90)
  return buf.getvalue()


DRAFT_TOLERANCE = 4.0   # mean absolute difference per image, in levels of 255 (measured: 0.8-2.9 at 48 px)


def test_reduced_scale_decode_matches_the_full_decode():
  """Random-resized crops with flips to 48 px of 480x640 JPEGs, 40 fixed seeds: decoding at reduced scale gives
  the same boxes and flips (drawn from the same generator on the full size) and pixels within DRAFT_TOLERANCE
  levels of the full decode's (mean absolute difference per image). At least a third of the crops must really be
  decoded at reduced scale, or the test would prove nothing. Catches a box not mapped to the reduced image (off
  by the scale), a different draw of the box, or a reduction that leaves the crop smaller than the output."""
  size, where = 48, "test image"
  kwargs = dict(augment="inception_crop_flip", normalize=False)
  full = transforms.Preprocess(size, (0.5,) * 3, (0.25,) * 3, **kwargs)
  draft = transforms.Preprocess(size, (0.5,) * 3, (0.25,) * 3, draft=True, **kwargs)
  reduced, diffs = 0, []
  for seed in range(40):
    encoded = _jpeg(480, 640, seed % 4)
    decoded = sources.decode_image(encoded, 3)
    box = full._box(480, 640, np.random.default_rng(seed))
    reduced += transforms.draft_scale(box, size) > 1
    a = full.random_map({"image": decoded, "label": 0}, np.random.default_rng(seed))["image"]
    b = draft.random_map({"image": transforms.EncodedImage(encoded, 3, where), "label": 0},
                         np.random.default_rng(seed))["image"]
    assert a.shape == b.shape == (size, size, 3) and b.dtype == np.uint8
    diffs.append(np.abs(a.astype(np.float64) - b).mean())
  assert reduced >= 40 // 3, reduced
  assert max(diffs) < DRAFT_TOLERANCE, diffs


def test_lazy_decode_without_reduction_equals_the_eager_decode():
  """`draft=False` (or a crop too small to reduce) decodes an EncodedImage fully: bit for bit the eager path's
  output, so a resumed run or the evaluation (never reduced) sees the same pixels as before."""
  p = transforms.Preprocess(32, (0.5,) * 3, (0.25,) * 3, augment="center_crop", normalize=False)
  encoded = _jpeg(96, 128, 0)
  a = p.random_map({"image": sources.decode_image(encoded, 3), "label": 0}, np.random.default_rng(0))["image"]
  b = p.random_map({"image": transforms.EncodedImage(encoded, 3, "x"), "label": 0}, np.random.default_rng(0))
  np.testing.assert_array_equal(a, b["image"])


def test_pipeline_with_jpeg_draft_keeps_labels_and_crops():
  """End to end on the synthetic JPEG data set (the lazy source, the draft path): the same labels as a full
  decode and images within the tolerance; a corrupt JPEG still names its example."""
  c = _synthetic_config(**{"dataset.image_size": 8})
  c_full = _synthetic_config(**{"dataset.image_size": 8, "dataset.jpeg_draft": False})
  a, _ = _first_batch(c)
  b, _ = _first_batch(c_full)
  np.testing.assert_array_equal(a["label"], b["label"])
  assert np.abs(a["image"].astype(np.float64) - b["image"]).mean(axis=(1, 2, 3)).max() < DRAFT_TOLERANCE
  bad = transforms.EncodedImage(b"\xff\xd8 not a jpeg", 3, "example 3 of data set 'x' split 'train'")
  with pytest.raises(data.BadExampleError, match="example 3 of data set 'x' split 'train': the image cannot be"):
    transforms.Preprocess(8, (0.5,) * 3, (0.25,) * 3, draft=True).random_map({"image": bad, "label": 0},
                                                                            np.random.default_rng(0))
