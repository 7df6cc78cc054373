"""Transfer: init from another run (dont_load, a new head), frozen parameters and batch norms, learning-rate
multipliers, the preprocessing of converted weights, the linear probe, configs/transfer.py."""
import re

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax import checkpoint, layers
from cnnjax.errors import ConfigError
from cnnjax.train import loop, optim, steps
from tests.helpers import assert_resume_is_exact, tiny_config

SYNTH5 = {"dataset.name": "synthetic", "dataset.synthetic.num_classes": 5, "dataset.synthetic.image_shape": (8, 8, 1),
          "dataset.synthetic.num_train": 128, "dataset.synthetic.num_eval": 64}


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
  """A digits run (10 classes) to start from."""
  w = tmp_path_factory.mktemp("source")
  loop.run(tiny_config(num_train_steps=3, checkpoint_every_steps=3), str(w))
  return str(w), checkpoint.load_numpy(str(w))[0]


@pytest.mark.slow
def test_frozen_backbone_is_bit_identical_and_the_new_head_trains(tmp_path, source_run):
  src, a = source_run
  c = tiny_config(num_train_steps=4, frozen="^(?!head/)", **SYNTH5,
                  **{"init.checkpoint": src, "init.dont_load": ("head",)})
  loop.run(c, str(tmp_path))
  b, _ = checkpoint.load_numpy(str(tmp_path))
  assert b["params"]["head"]["kernel"].shape == (32, 5)  # a new head for 5 classes
  for k in a["params"]:
    if k != "head":
      jax.tree.map(np.testing.assert_array_equal, b["params"][k], a["params"][k])  # loaded, then frozen
  # Frozen batch norms normalise with their running statistics and keep them (PyTorch's requires_grad=False would
  # still update them in train mode).
  jax.tree.map(np.testing.assert_array_equal, b["batch_stats"], a["batch_stats"])
  assert not np.allclose(b["params"]["head"]["kernel"], 0)


def test_init_that_does_not_fit_lists_the_leaves(tmp_path, source_run):
  c = tiny_config(num_train_steps=2, **SYNTH5, **{"init.checkpoint": source_run[0]})
  with pytest.raises(ConfigError, match=r"does not fit.*reshaped \['params/head/bias init \(10,\) vs model \(5,\)"):
    loop.run(c, str(tmp_path))


@pytest.mark.slow
def test_resume_does_not_apply_the_init_again(tmp_path, source_run):
  c = tiny_config(num_train_steps=4, checkpoint_every_steps=2, **{"init.checkpoint": source_run[0]})
  a = assert_resume_is_exact(c, tmp_path, stop_after=2)  # a re-applied init would reset the resumed run
  init_head = source_run[1]["params"]["head"]["kernel"]
  assert not np.array_equal(a["params"]["head"]["kernel"], init_head)  # it trained on from the init


def test_lr_mults_and_frozen_against_a_hand_computed_sgd_step():
  """Plain SGD with rate 0.1: an update is -0.1 * m * grad for a multiplier m, 0 for a frozen parameter."""
  c = tiny_config(optimizer="sgd", momentum=0.0, learning_rate=0.1, lr_schedule="constant", warmup_epochs=0,
                  weight_decay=0.0, lr_mults=(("^a/", 0.5), ("^b/", 3.0)), frozen="^c/")
  tx, _ = optim.build(c, 10, 100)
  params = {"a": {"w": jnp.ones(3)}, "b": {"w": jnp.ones(2)}, "c": {"w": jnp.ones(2)}, "d": {"w": jnp.ones(1)}}
  grads = jax.tree.map(lambda p: jnp.arange(1.0, p.size + 1), params)
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(updates["a"]["w"], -0.05 * np.array([1, 2, 3]), rtol=1e-6)
  np.testing.assert_allclose(updates["b"]["w"], -0.3 * np.array([1, 2]), rtol=1e-6)
  np.testing.assert_array_equal(updates["c"]["w"], [0, 0])
  np.testing.assert_allclose(updates["d"]["w"], [-0.1], rtol=1e-6)


# --- Frozen layers: batch norm in inference mode, no gradients computed -------------------------------------------

def _tiny_state(norm="batch", frozen="", seed=0):
  from cnnjax import models
  from cnnjax.train import state as state_lib
  c = tiny_config(optimizer="sgd", momentum=0.9, weight_decay=1e-3, frozen=frozen, **{"model.norm": norm})
  model = models.create("resnet20", num_classes=5, stage_sizes=(1, 1, 1), width=0.5, norm=norm)
  tx, schedule = optim.build(c, 10, 100)
  state = state_lib.create(jax.random.PRNGKey(seed), model, tx, (8, 8, 1))
  rng = np.random.default_rng(seed)
  batch = {"image": jnp.asarray(rng.normal(size=(16, 8, 8, 1)), jnp.float32),
           "label": jnp.asarray(rng.integers(0, 5, 16), jnp.int32)}
  return model, tx, schedule, state, batch


def test_a_frozen_batch_norm_uses_its_running_statistics_in_training():
  """Inside frozen_statistics, a training-mode BatchNorm whose scale and bias match equals numpy's normalisation
  with the running statistics and keeps them; one that does not match (or matches only its scale) uses the
  batch's statistics (numpy, float64) and updates them."""
  class Net(flax.linen.Module):
    @flax.linen.compact
    def __call__(self, x):
      return layers.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5, name="bn")(x)

  rng = np.random.default_rng(0)
  x = rng.normal(2.0, 3.0, size=(6, 3, 3, 4)).astype(np.float32)
  v = {"params": {"bn": {"scale": rng.uniform(0.5, 2, 4).astype(np.float32),
                         "bias": rng.normal(size=4).astype(np.float32)}},
       "batch_stats": {"bn": {"mean": rng.normal(size=4).astype(np.float32),
                              "var": rng.uniform(0.5, 4, 4).astype(np.float32)}}}
  p = {k: np.float64(a) for k, a in v["params"]["bn"].items()}
  s = {k: np.float64(a) for k, a in v["batch_stats"]["bn"].items()}
  running = (x - s["mean"]) / np.sqrt(s["var"] + 1e-5) * p["scale"] + p["bias"]
  batch_mean, batch_var = x.mean((0, 1, 2), dtype=np.float64), x.var((0, 1, 2), dtype=np.float64)
  in_batch = (x - batch_mean) / np.sqrt(batch_var + 1e-5) * p["scale"] + p["bias"]

  def apply(pattern):
    with layers.frozen_statistics(pattern):
      return Net().apply(v, x, mutable=["batch_stats"])

  y, new = apply("^bn/")
  np.testing.assert_allclose(y, running, rtol=1e-5, atol=1e-5)
  jax.tree.map(np.testing.assert_array_equal, new["batch_stats"], v["batch_stats"])
  for pattern in ("", "^head/", "bn/scale"):
    y, new = apply(pattern)
    np.testing.assert_allclose(y, in_batch, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(new["batch_stats"]["bn"]["mean"], 0.9 * s["mean"] + 0.1 * batch_mean, rtol=1e-5)


def _count(jaxpr, name):
  """How many equations named `name` a jaxpr holds, inside nested jaxprs (jit, custom_vjp, scan) too."""
  n = 0
  for eqn in jaxpr.eqns:
    n += eqn.primitive.name == name
    for sub in jax.core.jaxprs_in_params(eqn.params):
      n += _count(sub, name)
  return n


def test_no_gradient_is_computed_below_the_trainable_head():
  """A frozen backbone's training-mode logits are its evaluation-mode logits.
  A train step with everything but the head frozen runs only the forward convolutions (backward convolutions
  would be the kernels' and inputs' gradients); with nothing frozen it runs more."""
  model, tx, schedule, state, batch = _tiny_state(frozen="^(?!head/)")
  forward = _count(jax.make_jaxpr(lambda s, x: model.apply({"params": s.params, "batch_stats": s.batch_stats}, x,
                                                           train=False))(state, batch["image"]).jaxpr,
                   "conv_general_dilated")
  assert forward == 7  # stem + 3 blocks of 2 (option A shortcuts have no convolution)
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  with layers.frozen_statistics("^(?!head/)"):  # a frozen backbone computes in training what it does in eval
    train_logits, _ = model.apply(variables, batch["image"], train=True, mutable=["batch_stats"])
  np.testing.assert_array_equal(train_logits, model.apply(variables, batch["image"], train=False))
  frozen_step = steps.make_train_step(model, tx, schedule, frozen="^(?!head/)")
  assert _count(jax.make_jaxpr(frozen_step)(state, batch).jaxpr, "conv_general_dilated") == forward
  all_grads = steps.make_train_step(model, tx, schedule)  # the optimizer alone zeroes the frozen updates
  assert _count(jax.make_jaxpr(all_grads)(state, batch).jaxpr, "conv_general_dilated") > 2 * forward


def test_gradients_of_the_trainable_part_equal_the_full_gradient_path():
  """Without batch norm (whose frozen layers differ by design), three steps with the gradient taken only for the
  trainable parameters equal three steps taking all gradients and zeroing the frozen updates in the optimizer;
  the frozen parameters stay bit-identical."""
  frozen = "^(stem|stage1)"
  model, tx, schedule, state, batch = _tiny_state(norm="none", frozen=frozen)
  partial_step = jax.jit(steps.make_train_step(model, tx, schedule, frozen=frozen))
  full_step = jax.jit(steps.make_train_step(model, tx, schedule))
  a = b = state
  for _ in range(3):
    a, ma = partial_step(a, batch)
    b, mb = full_step(b, batch)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7), a.params, b.params)
  np.testing.assert_allclose(ma["loss"], mb["loss"], rtol=1e-6)
  for k in ("stem_conv", "stage1_block1"):
    jax.tree.map(np.testing.assert_array_equal, a.params[k], state.params[k])
  trained = lambda s: s.params["stage2_block1"]["Conv_0"]["kernel"]
  assert not np.allclose(trained(a), trained(state))


# --- The preprocessing of a converted (pretrained.json) checkpoint ---------------------------------------------------

MEAN, STD = (0.1, 0.2, 0.3), (0.5, 0.6, 0.7)


def _converted(tmp_path, mean=MEAN, std=STD, transform_input=False, input_size=8):
  """A directory as `python -m cnnjax.pretrained` writes it, holding a tiny 3-channel ResNet for 7 classes."""
  import os
  from cnnjax import models, workdir
  module = models.create("resnet20", num_classes=7, stage_sizes=(1, 1, 1), width=0.5)
  shapes = models.init_variables(module, (8, 8, len(mean)), abstract=True)  # random values, no compiling
  rng = np.random.default_rng(5)
  v = jax.tree.map(lambda s: rng.normal(0, 0.3, s.shape).astype(np.float32), shapes)
  v["batch_stats"] = jax.tree.map(lambda a: np.abs(a) + 0.5, v["batch_stats"])  # variances > 0
  out = str(tmp_path / "converted")
  m = checkpoint.Manager(os.path.join(out, "checkpoints"), max_to_keep=1, async_save=False)
  m.save(0, {"params": v["params"], "batch_stats": v["batch_stats"]})
  m.wait()
  m.close()
  workdir.write_json(workdir.path(out) / "pretrained.json", {
      "model": "resnet20", "options": {}, "num_classes": 7, "preprocessing": {
          "mean": list(mean), "std": list(std), "input_size": input_size, "resize_size": input_size,
          "interpolation": "bilinear", "transform_input": transform_input}})
  return out, v


def test_a_converted_init_normalises_grey_digits_as_its_weights_expect(tmp_path):
  """The pipeline's images are numpy's (grey replicated to RGB, then the pretrained mean and std per channel);
  the run records it, trains from the 3-channel weights, and --mode=eval evaluates it the same way."""
  from cnnjax import data, workdir
  from cnnjax.train import transfer
  out, v = _converted(tmp_path)
  c = tiny_config(num_train_steps=2, frozen="^stem", **{"init.checkpoint": out, "init.dont_load": ("head",)})
  source, info = data.get_source(c.dataset, "test")
  info3, applied = transfer.pretrained_preprocessing(c, info)
  assert info3.image_shape == (8, 8, 3) and applied["grey_to_rgb"] and applied["mean"] == pytest.approx(MEAN)
  batch = data.on_device(c, info3)(next(iter(data.eval_dataset(c, source, info3))))  # as inside the steps
  grey = np.stack([source[i]["image"] for i in range(len(batch["image"]))]).astype(np.float64) / 255
  want = (np.repeat(grey, 3, axis=-1) - np.array(MEAN)) / np.array(STD)
  np.testing.assert_allclose(batch["image"], want, rtol=1e-6, atol=1e-6)

  final = loop.run(c, str(tmp_path / "run"))
  assert workdir.read_json(workdir.path(tmp_path / "run") / "preprocessing.json") == applied
  state, _ = checkpoint.load_numpy(str(tmp_path / "run"))
  np.testing.assert_array_equal(state["params"]["stem_conv"]["kernel"], v["params"]["stem_conv"]["kernel"])
  assert loop.evaluate_checkpoint(c, str(tmp_path / "run"))["top1"] == final["eval"]["top1"]


def test_transform_input_and_mismatches(tmp_path):
  from cnnjax import data
  from cnnjax.train import transfer
  out, _ = _converted(tmp_path, transform_input=True)
  c = tiny_config(**{"init.checkpoint": out})
  _, applied = transfer.pretrained_preprocessing(c, data.get_info(c.dataset))
  assert applied["mean"] == applied["std"] == [0.5, 0.5, 0.5]  # torchvision's GoogLeNet transform_input
  with pytest.raises(ConfigError, match=r"image_size=16 but the weights of .* expect 8 .*set "
                                        r"dataset.image_size=8, or init.preprocessing=False"):
    transfer.pretrained_preprocessing(tiny_config(**{"init.checkpoint": out, "dataset.image_size": 16}),
                                      data.get_info(c.dataset))
  grey, _ = _converted(tmp_path / "grey", mean=(0.5,), std=(0.25,))
  c = tiny_config(**{"init.checkpoint": grey, **SYNTH5, "dataset.synthetic.image_shape": (8, 8, 3)})
  with pytest.raises(ConfigError, match=r"expects 1-channel images; 'synthetic' gives 3-channel inputs"):
    transfer.pretrained_preprocessing(c, data.get_info(c.dataset))
  c.init.preprocessing = False
  assert transfer.pretrained_preprocessing(c, data.get_info(c.dataset))[1] is None


# --- Linear probe ---------------------------------------------------------------------------------------------------

def test_linear_probe_equals_scikit_learn_on_the_backbone_features(tmp_path, source_run):
  """The probe's head equals scikit-learn's LogisticRegression (C = 1 / (l2 n)) on the head's inputs, computed
  here from the last block's captured output (global average pooled) on images normalised by numpy; the backbone
  stays bit-identical; the final eval and --mode=eval score the fitted head."""
  from sklearn.linear_model import LogisticRegression
  from cnnjax import data, models
  src, a = source_run
  l2 = 0.01
  c = tiny_config(**{"init.checkpoint": src, "init.dont_load": ("head",), "linear_probe.enabled": True,
                     "linear_probe.l2": l2, "linear_probe.tol": 1e-6, "dataset.classes": (5, 6, 7, 8, 9),
                     "dataset.relabel": True, "dataset.train_per_class": 20})
  final = loop.run(c, str(tmp_path))
  b, step = checkpoint.load_numpy(str(tmp_path))
  assert step == 0
  for k in a["params"]:
    if k != "head":
      jax.tree.map(np.testing.assert_array_equal, b["params"][k], a["params"][k])
  jax.tree.map(np.testing.assert_array_equal, b["batch_stats"], a["batch_stats"])

  module = models.create("resnet20", num_classes=5, stage_sizes=(1, 1, 1), width=0.5)
  info = data.get_info(c.dataset)

  def features(split):
    source, _ = data.get_source(c.dataset, split)
    x = np.stack([source[i]["image"] for i in range(len(source))]) / 255.0
    x = ((x - np.array(info.mean)) / np.array(info.std)).astype(np.float32)
    _, inter = module.apply({"params": b["params"], "batch_stats": b["batch_stats"]}, x, train=False,
                            capture_intermediates=True, mutable=["intermediates"])
    return (np.asarray(inter["intermediates"]["stage3_block1"]["__call__"][0]).mean(axis=(1, 2)),
            np.array([source[i]["label"] for i in range(len(source))]))

  x, y = features("train")
  ref = LogisticRegression(C=1 / (l2 * len(y)), tol=1e-10, max_iter=10_000).fit(x.astype(np.float64), y)
  head = b["params"]["head"]
  scale = np.abs(ref.coef_).max()
  np.testing.assert_allclose(head["kernel"], ref.coef_.T, atol=1e-4 * scale)
  np.testing.assert_allclose(head["bias"] - head["bias"].mean(), ref.intercept_ - ref.intercept_.mean(),
                             atol=1e-4 * scale)
  xe, ye = features("test")
  assert final["eval"]["count"] == len(ye)
  assert final["eval"]["top1"] == pytest.approx(np.mean(ref.predict(xe) == ye), abs=1 / len(ye))
  assert loop.evaluate_checkpoint(c, str(tmp_path))["top1"] == final["eval"]["top1"]


@pytest.mark.parametrize("preset", ["fashion_frozen", "digits_probe", "digits_scratch"])
def test_transfer_presets_build_and_their_regexes_name_real_parameters(preset):
  """configs/transfer.py: the presets validate; dont_load keeps exactly the head fresh; `frozen` matches the stem
  and the first two stages of ResNet-20 and nothing after (checked on its real parameter names)."""
  from cnnjax import config as config_lib, data, models
  from cnnjax.train import transfer
  c = config_lib.load_file(f"configs/transfer.py:{preset}")
  config_lib.validate(c)
  info = data.get_info(c.dataset)
  assert info.num_classes == (5 if preset.startswith("fashion") else 10)
  model = models.create(c.model.name, num_classes=info.num_classes, **config_lib.model_options(c))
  params = models.init_variables(model, (28, 28, 1), abstract=True)["params"]
  train, frozen = transfer.partition(params, c.frozen)
  if preset == "fashion_frozen":
    assert sorted({p.split("/")[0] for p in frozen}) == ["stage1_block1", "stage1_block2", "stage1_block3",
                                                         "stage2_block1", "stage2_block2", "stage2_block3",
                                                         "stem_conv", "stem_norm"]
    assert sorted({p.split("/")[0] for p in train}) == ["head", "stage3_block1", "stage3_block2", "stage3_block3"]
  else:
    assert not frozen
  paths = sorted(flax.traverse_util.flatten_dict(params, sep="/"))
  assert [p for p in paths if any(re.search(r, f"params/{p}") for r in c.init.dont_load)] == ["head/bias",
                                                                                             "head/kernel"]
  assert bool(c.init.checkpoint) == (preset != "digits_scratch")  # scratch loads nothing
