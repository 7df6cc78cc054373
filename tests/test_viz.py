"""cnnjax.viz: the arrays behind each figure, against scipy, lax, numpy and hand-worked cases."""
import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from scipy import ndimage, signal

from cnnjax import build, models, viz
from cnnjax.models.common import make_norm
from cnnjax.models.resnet import _Block


def _digit():
  from sklearn.datasets import load_digits
  return load_digits().images[3] / 16.0


# --- hand-made kernels -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("impl", ["direct", "fft"])
def test_filter2d_is_scipy_correlate_and_convolve2d_of_the_flipped_kernel(impl):
  """The project's convolution is a cross-correlation: scipy's correlate, or convolve2d with the kernel flipped."""
  rng = np.random.default_rng(0)
  for image in (_digit(), rng.normal(size=(9, 11))):
    for name, k in viz.KERNELS.items():
      got = viz.filter2d(image, k, impl)
      np.testing.assert_allclose(got, ndimage.correlate(image, k, mode="constant", cval=0.0), atol=2e-5,
                                 err_msg=name)
      np.testing.assert_allclose(got, signal.convolve2d(image, k[::-1, ::-1], mode="same"), atol=2e-5,
                                 err_msg=name)


def test_where_correlation_and_convolution_differ():
  """The lecture kernel is unchanged by a 180-degree turn (k[::-1, ::-1] == k), so convolving it without the
  flip happens to give the same image; Sobel x turns into -Sobel x, so convolution negates the result; an
  off-centre one-hot kernel shows the direction: correlation reads x[i-1, j-1], convolution x[i+1, j+1]."""
  image = _digit()
  np.testing.assert_array_equal(viz.LECTURE_EXAMPLE[::-1, ::-1], viz.LECTURE_EXAMPLE)
  np.testing.assert_allclose(viz.filter2d(image, viz.LECTURE_EXAMPLE),
                             signal.convolve2d(image, viz.LECTURE_EXAMPLE, mode="same"), atol=2e-5)
  sobel = viz.filter2d(image, viz.SOBEL_X)
  assert np.abs(sobel).max() > 1
  np.testing.assert_allclose(signal.convolve2d(image, viz.SOBEL_X, mode="same"), -sobel, atol=2e-5)
  shift = np.zeros((3, 3))
  shift[0, 0] = 1
  padded = np.pad(image, 1)
  np.testing.assert_allclose(viz.filter2d(image, shift), padded[:-2, :-2], atol=1e-6)
  np.testing.assert_allclose(signal.convolve2d(image, shift, mode="same"), padded[2:, 2:], atol=1e-12)


def test_gaussian_kernel_and_sobel_magnitude_match_scipy():
  impulse = np.zeros((5, 5))
  impulse[2, 2] = 1
  # scipy's separable Gaussian with radius truncate * sigma = 2: the same normalised 5x5 kernel.
  np.testing.assert_allclose(viz.GAUSSIAN_BLUR, ndimage.gaussian_filter(impulse, 1.0, truncate=2.0, mode="constant"),
                             atol=1e-12)
  image = _digit()
  out = viz.apply_kernels(image)
  gx, gy = ndimage.sobel(image, 1, mode="constant"), ndimage.sobel(image, 0, mode="constant")
  np.testing.assert_allclose(out["Sobel x"], gx, atol=2e-5)
  np.testing.assert_allclose(out[viz.GRADIENT_MAGNITUDE], np.hypot(gx, gy), atol=5e-5)


def test_filter2d_refuses_even_kernels():
  with pytest.raises(ValueError, match="odd sizes"):
    viz.filter2d(np.zeros((5, 5)), np.ones((2, 2)))


# --- max-pool routing ------------------------------------------------------------------------------------------
def test_maxpool_gradient_goes_to_each_windows_maximum_lecture_example():
  """Worked by hand: windows [[2,3],[1,5]] -> 5 at (1,1); [[4,0],[3,2]] -> 4 at (0,2); [[0,4],[1,0]] -> 4 at
  (2,1); [[2,3],[6,1]] -> 6 at (3,2)."""
  pooled, grad = viz.maxpool_routing(viz.LECTURE_POOL_INPUT)
  np.testing.assert_array_equal(pooled, [[5, 4], [4, 6]])
  np.testing.assert_array_equal(grad, [[0, 0, 1, 0], [0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]])


def test_maxpool_gradient_matches_a_numpy_argmax_mask():
  x = np.random.default_rng(1).permutation(36).reshape(6, 6).astype(float)   # distinct values: no ties
  pooled, grad = viz.maxpool_routing(x, 3, 3)
  want = np.zeros_like(x)
  for i in range(0, 6, 3):
    for j in range(0, 6, 3):
      a, b = np.unravel_index(np.argmax(x[i:i + 3, j:j + 3]), (3, 3))
      want[i + a, j + b] = 1
  np.testing.assert_array_equal(grad, want)
  np.testing.assert_array_equal(pooled, x.reshape(2, 3, 2, 3).max(axis=(1, 3)))


# --- feature maps and dead maps --------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _resnet8(key=0):
  model = models.create("resnet20", num_classes=10, stage_sizes=(1, 1, 1))
  x = jax.random.normal(jax.random.PRNGKey(key + 1), (2, 12, 12, 1))
  variables = jax.jit(lambda k, v: model.init(k, v, train=False))(jax.random.PRNGKey(key), x)
  # Non-trivial running statistics, so inference-mode batch norm is not the identity.
  leaves, tree = jax.tree.flatten(variables["batch_stats"])
  keys = jax.random.split(jax.random.PRNGKey(7), len(leaves))
  leaves = [jnp.abs(v + 0.3 * jax.random.normal(k, v.shape)) for v, k in zip(leaves, keys)]
  return model, {"params": variables["params"], "batch_stats": jax.tree.unflatten(tree, leaves)}, x


def test_feature_maps_match_lax_and_a_separately_applied_block():
  model, variables, x = _resnet8()
  maps = viz.feature_maps(model, variables, x, ".*")
  kernel = variables["params"]["stem_conv"]["kernel"]
  want = lax.conv_general_dilated(x, kernel, (1, 1), [(1, 1), (1, 1)], dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                  precision=lax.Precision.HIGHEST)
  np.testing.assert_allclose(maps["stem_conv"], want, atol=1e-4)
  # stage2_block1 (stride 2, option-A shortcut) applied on its own to the captured input relu(stage1_block1).
  from cnnjax.layers import Conv
  conv = functools.partial(Conv, use_bias=False, dtype=jnp.float32, param_dtype=jnp.float32, impl="xla")
  norm = make_norm("batch", train=False, dtype=jnp.float32, param_dtype=jnp.float32)
  block = _Block(32, 2, False, conv, norm, True, "A", False, True)
  sub = {c: variables[c]["stage2_block1"] for c in ("params", "batch_stats")}
  want = block.apply(sub, jnp.asarray(maps["stage1_block1"]))
  assert maps["stage2_block1"].shape == (2, 6, 6, 32)
  np.testing.assert_allclose(maps["stage2_block1"], want, atol=1e-4)


def test_default_selection_is_every_conv_pool_and_block_in_call_order():
  model, variables, x = _resnet8()
  maps = viz.feature_maps(model, variables, x)
  blocks = ["stage1_block1", "stage2_block1", "stage3_block1"]
  want = ["stem_conv"] + [n for b in blocks for n in (f"{b}/Conv_0", f"{b}/Conv_1", b)]
  assert list(maps) == want
  assert viz.conv_paths(model, x.shape[1:]) == [n for n in want if n not in blocks]
  np.testing.assert_array_equal(viz.first_conv_kernel(model, variables["params"], x.shape[1:]),
                                variables["params"]["stem_conv"]["kernel"])
  with pytest.raises(ValueError, match="matches no module"):
    viz.feature_maps(model, variables, x, "nothing_like_this")


def test_feature_maps_of_a_pool_are_the_numpy_max_of_the_activated_conv():
  model = models.create("lenet5", num_classes=10, modern=True)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 32, 32, 1))
  variables = jax.jit(lambda k, v: model.init(k, v, train=False))(jax.random.PRNGKey(1), x)
  maps = viz.feature_maps(model, variables, x, "C1|S2")
  a = np.maximum(np.asarray(maps["C1"], np.float64), 0)
  np.testing.assert_allclose(maps["S2"], a.reshape(2, 14, 2, 14, 2, 6).max(axis=(2, 4)), atol=1e-6)


def test_dead_maps_on_a_hand_built_batch():
  m = np.random.default_rng(0).uniform(0.1, 1, (3, 4, 4, 5))
  m[..., 1] = 0                      # dead: zero everywhere
  m[..., 3] = 0
  m[2, 1, 1, 3] = 0.5                # alive in one pixel of one example
  m[0, ..., 4] = 0                   # zero for one example only: alive
  out = viz.dead_maps({"a": m, "b": np.zeros((2, 3, 3, 2))})
  np.testing.assert_array_equal(out["a"], [1])
  np.testing.assert_array_equal(out["b"], [0, 1])


def test_dead_maps_through_a_model_with_zeroed_filters():
  model, variables, x = _resnet8()
  params = jax.tree.map(np.array, variables["params"])
  params["stem_conv"]["kernel"][..., [2, 5]] = 0     # no bias: these maps are zero for every input
  maps = viz.feature_maps(model, {**variables, "params": params}, x)
  dead = viz.dead_maps(maps)
  np.testing.assert_array_equal(dead["stem_conv"], [2, 5])


# --- a trained workdir -----------------------------------------------------------------------------------------
def test_load_workdir_reproduces_the_training_loops_evaluation(tmp_path, make_config):
  """The rebuilt model, checkpoint variables and eval preprocessing give the top-1 the training loop logged."""
  from cnnjax.train import loop
  loop.run(make_config(num_train_steps=3), str(tmp_path))
  model, variables, config, info = build.load_workdir(str(tmp_path))
  images, labels = viz.eval_images(config, info)
  logits = model.apply(variables, images, train=False)
  top1 = float(np.mean(np.argmax(logits, -1) == labels))
  logged = [json.loads(line) for line in open(os.path.join(tmp_path, "metrics.jsonl"))]
  want = [e["top1"] for e in logged if e["split"] == "eval"][-1]
  assert len(labels) == 355
  assert top1 == pytest.approx(want, abs=1e-6)
  np.testing.assert_array_equal(viz.first_conv_kernel(model, variables["params"], images.shape[1:]),
                                variables["params"]["stem_conv"]["kernel"])
  assert os.path.getsize(viz.plot_workdir_filters(str(tmp_path), str(tmp_path / "filters.png"))) > 0


def test_a_workdir_written_by_an_earlier_version_is_rebuilt_as_it_was_trained(tmp_path):
  """build.load_workdir on the workdir an earlier version wrote (tests/data/README.md; its config.json lacks
  fields added since): the rebuilt model's top-1 on the evaluation images equals the one that version logged at
  the same step (within one example: the logits may be computed on another CPU)."""
  from cnnjax.workdir import read_jsonl
  old = os.path.join(os.path.dirname(__file__), "data", "workdir_c930307")
  model, variables, config, info = build.load_workdir(old)
  images, labels = viz.eval_images(config, info)
  top1 = float(np.mean(np.argmax(model.apply(variables, images, train=False), -1) == labels))
  logged = [e for e in read_jsonl(os.path.join(old, "metrics.jsonl")) if e["split"] == "eval"][-1]
  assert logged["step"] == 3 and len(labels) == 355
  assert top1 == pytest.approx(logged["top1"], abs=1.01 / 355)
