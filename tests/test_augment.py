"""TrivialAugmentWide and random erasing against torchvision.transforms.v2 on the same uint8 images and the
same random draws, and an exact resume with both on."""

import numpy as np
import pytest
from PIL import Image

from cnnjax.data import transforms
from tests import _torchvision  # noqa: F401  (torchvision importable beside the CPU torch)


class TorchDraws:
  """A numpy-Generator-like object whose draws are torch's, in the calls torchvision makes: so our sampler and
  torchvision's transform, each run after torch.manual_seed(s), see the same random numbers."""

  def integers(self, lo, hi):
    import torch
    return int(torch.randint(lo, hi, size=(1,)))

  def random(self):
    import torch
    return float(torch.rand(()))

  def uniform(self, lo, hi):
    import torch
    return torch.empty(1).uniform_(lo, hi).item()


def _image(channels, h=20, w=24, seed=0):
  rng = np.random.default_rng(seed)
  base = rng.integers(30, 220, (h, w, channels))
  base[: h // 2] //= 3                  # two regions, so contrast and equalize have something to do
  return base.astype(np.uint8)


def _tv(image):
  return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)


def test_magnitude_tables_equal_torchvision():
  """The 14 operations in torchvision's order, signed as its, with its 31-bin magnitude tables."""
  from torchvision.transforms import v2
  space = v2.TrivialAugmentWide._AUGMENTATION_SPACE
  assert [o[0] for o in transforms.TRIVIAL_OPS] == list(space)
  for name, mags, signed in transforms.TRIVIAL_OPS:
    fn, tv_signed = space[name]
    want = fn(31, 32, 32)
    assert signed == tv_signed, name
    if want is None:
      assert mags is None, name
    else:
      np.testing.assert_array_equal(np.asarray(mags, np.float64), want.numpy().astype(np.float64), err_msg=name)


@pytest.mark.parametrize("channels", [1, 3])
def test_each_operation_equals_torchvision(channels):
  """Every operation at magnitudes from each end of its table, both signs, against torchvision's own dispatch
  (TrivialAugmentWide._apply_image_or_video_transform, which turns the magnitude into F.affine's shear in degrees,
  int translations, 1 + m factors, 255 m thresholds) on the same uint8 image: equal pixel for pixel. Catches a
  shear about the centre instead of the corner, a translation the wrong way, factor m instead of 1 + m, a
  threshold in [0, 1]."""
  from torchvision.transforms import InterpolationMode, v2
  ta = v2.TrivialAugmentWide()
  image = _image(channels)
  for name, mags, signed in transforms.TRIVIAL_OPS:
    values = [0.0] if mags is None else [float(mags[i]) for i in (1, 7, 18, 30)]
    for m in values + ([-v for v in values] if signed else []):
      want = np.asarray(ta._apply_image_or_video_transform(_tv(image), name, m, InterpolationMode.NEAREST, ta._fill))
      got = transforms.trivial_op(image, name, m)
      assert got.shape == image.shape and got.dtype == np.uint8
      np.testing.assert_array_equal(got[..., 0] if channels == 1 else got, want, err_msg=f"{name} {m}")
  assert not np.array_equal(transforms.trivial_op(image, "ShearX", 0.5), image)


def test_sampling_equals_torchvision_trivial_augment_wide():
  """The whole transform with torch's draws fed to our sampler: after the same seed, torchvision's
  TrivialAugmentWide()(image) and ours give the same image, over seeds covering every operation (catches an
  operation order, sign convention or bin count that differs)."""
  import torch
  from torchvision.transforms import v2
  ta = v2.TrivialAugmentWide()
  image = _image(3, seed=1)
  seen = set()
  for seed in range(120):
    torch.manual_seed(seed)
    want = np.asarray(ta(_tv(image)))
    torch.manual_seed(seed)
    seen.add(int(torch.randint(14, ())))
    torch.manual_seed(seed)
    got = transforms.trivial_augment(image, TorchDraws())
    np.testing.assert_array_equal(got, want, err_msg=f"seed {seed}")
  assert len(seen) == 14


def test_erasing_box_equals_torchvision_and_erase_sets_zero():
  """torchvision's RandomErasing.make_params (scale 0.02-0.33, ratio 0.3-3.3, value 0) and our erasing_box on the
  same torch draws: the same box, over seeds and sizes, including the 10-miss fallback (no box)."""
  import torch
  from torchvision.transforms import v2
  re = v2.RandomErasing(p=1.0, value=0)
  for h, w in ((28, 28), (32, 32), (5, 40)):
    img = torch.zeros(1, h, w)
    for seed in range(60):
      torch.manual_seed(seed)
      p = re.make_params([img])
      torch.manual_seed(seed)
      box = transforms.erasing_box(h, w, TorchDraws())
      want = (p["i"], p["j"], p["h"], p["w"])
      assert (box or (0, 0, h, w)) == want, (h, w, seed)   # torchvision's 'erase nothing' is the whole image, v=image


def test_random_erasing_in_preprocess():
  """Preprocess with random_erasing=1: the normalised image with one box set to 0 (the mean), where the box is the
  one erasing_box draws after the flip draw from the same Generator; with trivial_augment the same for TA."""
  image = _image(1, 16, 16)
  pre = transforms.Preprocess(16, (0.5,), (0.25,), augment="none", random_erasing=1.0)
  rng = np.random.default_rng(3)
  out = pre.random_map({"image": image, "label": 1}, rng)["image"]
  ref_rng = np.random.default_rng(3)
  assert ref_rng.random() < 1.0
  top, left, h, w = transforms.erasing_box(16, 16, ref_rng)
  want = (image.astype(np.float32) / 255 - 0.5) / 0.25
  want[top:top + h, left:left + w] = 0
  np.testing.assert_array_equal(out, want)
  pre = transforms.Preprocess(16, (0.5,), (0.25,), augment="none", trivial_augment=True)
  out = pre.random_map({"image": image, "label": 1}, np.random.default_rng(4))["image"]
  want = (transforms.trivial_augment(image, np.random.default_rng(4)).astype(np.float32) / 255 - 0.5) / 0.25
  np.testing.assert_array_equal(out, want)


@pytest.mark.slow
def test_resume_with_trivial_augment_and_erasing_is_exact(tmp_path):
  """Every draw comes from Grain's per-example Generator (the pipeline seed and the example's position in the
  stream), so a run stopped and resumed ends bit-identical to an uninterrupted one."""
  from tests.helpers import assert_resume_is_exact, tiny_config
  c = tiny_config(**{"dataset.trivial_augment": True, "dataset.random_erasing": 0.5})
  assert_resume_is_exact(c, tmp_path, stop_after=3)
