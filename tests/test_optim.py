"""Schedules and weight decay against hand-computed values."""
import jax.numpy as jnp
import numpy as np
import optax

from cnnjax.train import optim
from tests.helpers import tiny_config


def test_cosine_with_warmup_hand_computed():
  c = tiny_config(learning_rate=0.4, lr_schedule="cosine", warmup_epochs=1.0)
  sched = optim.learning_rate_schedule(c, steps_per_epoch=10, total_steps=50)
  assert float(sched(0)) == 0.0
  np.testing.assert_allclose(float(sched(5)), 0.2, rtol=1e-6)         # halfway through warmup
  np.testing.assert_allclose(float(sched(10)), 0.4, rtol=1e-6)        # warmup done
  np.testing.assert_allclose(float(sched(30)), 0.4 * 0.5 * (1 + np.cos(np.pi * 20 / 40)), rtol=1e-5)
  np.testing.assert_allclose(float(sched(50)), 0.0, atol=1e-7)


def test_step_schedule_hand_computed():
  c = tiny_config(learning_rate=0.1, lr_schedule="step", lr_boundaries_epochs=(2, 4), lr_decay_factor=0.1,
                  warmup_epochs=0.0)
  sched = optim.learning_rate_schedule(c, steps_per_epoch=5, total_steps=30)
  np.testing.assert_allclose([float(sched(s)) for s in (0, 9, 10, 19, 20, 29)],
                             [0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-5)


def test_weight_decay_skips_norm_and_bias_unless_asked():
  params = {"kernel": jnp.ones((3, 3, 1, 2)), "bias": jnp.ones((2,)), "scale": jnp.ones((2,))}
  grads = {k: jnp.zeros_like(v) for k, v in params.items()}
  for include, want_bias in [(False, 1.0), (True, 1.0 - 0.1 * 0.5)]:
    c = tiny_config(optimizer="sgd", learning_rate=0.1, lr_schedule="constant", momentum=0.0, nesterov=False,
                    weight_decay=0.5, weight_decay_norm_and_bias=include, warmup_epochs=0.0)
    tx, _ = optim.build(c, steps_per_epoch=1, total_steps=1)
    updates, _ = tx.update(grads, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    np.testing.assert_allclose(new["kernel"], 1.0 - 0.1 * 0.5)      # SGD + L2: w - lr * wd * w
    np.testing.assert_allclose(new["bias"], want_bias)
    np.testing.assert_allclose(new["scale"], want_bias)
