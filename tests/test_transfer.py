"""Transfer: init from another run (dont_load, a new head), frozen parameters, learning-rate multipliers."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnnjax import checkpoint
from cnnjax.errors import ConfigError
from cnnjax.train import loop, optim
from tests.conftest import assert_resume_is_exact, tiny_config

SYNTH5 = {"dataset.name": "synthetic", "dataset.synthetic.num_classes": 5, "dataset.synthetic.image_shape": (8, 8, 1),
          "dataset.synthetic.num_train": 128, "dataset.synthetic.num_eval": 64}


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
  """A digits run (10 classes) to start from."""
  w = tmp_path_factory.mktemp("source")
  loop.run(tiny_config(num_train_steps=3, checkpoint_every_steps=3), str(w))
  return str(w), checkpoint.load_numpy(str(w))[0]


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
  assert not np.allclose(b["params"]["head"]["kernel"], 0)


def test_init_that_does_not_fit_lists_the_leaves(tmp_path, source_run):
  c = tiny_config(num_train_steps=2, **SYNTH5, **{"init.checkpoint": source_run[0]})
  with pytest.raises(ConfigError, match=r"does not fit.*reshaped \['params/head/bias init \(10,\) vs model \(5,\)"):
    loop.run(c, str(tmp_path))


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
