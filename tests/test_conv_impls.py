"""Per-layer convolution implementations: `resolve_impl` hands what 'winograd' cannot do to lax, models with such
layers give lax's logits and train, and the plan is logged once per model."""
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax import layers, models
from cnnjax.layers import impl_plan
from cnnjax.layers._conv_spec import make_spec
from cnnjax.train import loop
from cnnjax.workdir import read_jsonl
from tests import helpers
from tests.helpers import tiny_config


def _spec(k, stride=1, dilation=1):
  x, w = jnp.zeros((1, 9, 9, 2)), jnp.zeros((k, k, 2, 3))
  return make_spec(x, w, (stride, stride), "SAME", rhs_dilation=(dilation, dilation),
                   dimension_numbers=("NHWC", "HWIO", "NHWC"))


def test_resolve_impl_sends_what_winograd_cannot_do_to_lax():
  assert layers.resolve_impl("winograd", _spec(3)) == ("winograd", None)
  assert layers.resolve_impl("winograd", _spec(1, stride=2)) == ("xla", "1x1 stride 2")
  assert layers.resolve_impl("winograd", _spec(3, dilation=2)) == ("xla", "3x3 dilation 2")
  assert layers.resolve_impl("winograd", _spec(5)) == ("xla", "5x5")
  for impl in ("direct", "im2col", "fft", "xla"):           # no geometric limits: every layer keeps its impl
    assert layers.resolve_impl(impl, _spec(1, stride=2)) == (impl, None)
  with pytest.raises(ValueError, match=r"impl='magic' is not one of \('direct'"):
    layers.resolve_impl("magic", _spec(3))


@pytest.mark.slow
@pytest.mark.parametrize("name, size, channels, line", [
    # LeNet-5: C1, C5 and the 16 partial maps of C3 are all 5x5.
    ("lenet5", 32, 1, "conv_impl=winograd: 0 of 18 convolutions; xla for 18 (5x5: 18)"),
    # GoogLeNet (Szegedy et al. 2015, Table 1): the 7x7/2 stem, a 1x1 reduce and a 3x3; per inception module
    # four 1x1, one 3x3, one 5x5 (x9); the two auxiliary heads' 1x1 convolutions.
    ("googlenet", 96, 3, "conv_impl=winograd: 10 of 59 convolutions; xla for 49 (1x1: 39, 5x5: 9, 7x7 stride 2: 1)"),
], ids=["lenet5", "googlenet"])
def test_winograd_models_give_lax_logits(name, size, channels, line):
  x = jax.random.normal(jax.random.PRNGKey(1), (2, size, size, channels))
  m = models.create(name, num_classes=10)
  v = helpers.random_variables(m, x.shape[1:])  # not m.init: op by op, that was two thirds of the GoogLeNet case
  with layers.record_conv_impls() as plan:
    got = models.create(name, num_classes=10, conv_impl="winograd").apply(v, x, train=False)
  assert layers.describe_conv_impls(plan) == line
  assert impl_plan._ACTIVE == []     # the model's own recording, nested in this one, is closed too
  ref = m.apply(v, x, train=False)
  np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5 * float(jnp.abs(ref).max()))


@pytest.mark.slow
def test_plan_is_logged_once_per_model(caplog, monkeypatch):
  monkeypatch.setattr(impl_plan, "_LOGGED", set())
  x = jnp.zeros((1, 8, 8, 3))
  with caplog.at_level(logging.INFO, logger="cnnjax"), layers.record_conv_impls() as plan:
    for impl in ("winograd", "direct", "xla"):
      m = models.create("resnet20", num_classes=10, stage_sizes=(1, 1, 1), conv_impl=impl)
      v = m.init(jax.random.PRNGKey(0), x, train=False)                # traced three times
      m.apply(v, x, train=False)
      jax.jit(lambda v, x: m.apply(v, x, train=False))(v, x)
  assert len(plan) == 3 * 3 * 7 and impl_plan._ACTIVE == []            # every trace recorded, nesting closed
  assert [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "cnnjax"] == [
      ("WARNING", "ResNet: conv_impl=winograd: 5 of 7 convolutions; xla for 2 (3x3 stride 2: 2)"),
      ("INFO", "ResNet: conv_impl=direct: 7 of 7 convolutions")]


@pytest.mark.slow
def test_winograd_trains_resnet20_like_lax(tmp_path):
  """--config.model.conv_impl=winograd through the training loop: the same losses as lax, step by step."""
  losses = {}
  for impl in ("winograd", "xla"):
    c = tiny_config(num_train_steps=2, log_every_steps=1, eval_every_steps=2, checkpoint_every_steps=2,
                    **{"model.conv_impl": impl})
    loop.run(c, str(tmp_path / impl))
    losses[impl] = [e["loss"] for e in read_jsonl(str(tmp_path / impl / "metrics.jsonl"))
                    if e["split"] == "train"]
  assert len(losses["winograd"]) == 2 and np.isfinite(losses["winograd"]).all()
  np.testing.assert_allclose(losses["winograd"], losses["xla"], rtol=1e-4)
