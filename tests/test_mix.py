"""Mixup and CutMix: hand-worked batches, torchvision.transforms.v2's MixUp/CutMix on the same draws, torch's
cross-entropy with probability targets and label smoothing, and the train step's loss and top-1."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnnjax.train import mix, state as state_lib, steps
from tests import _torchvision  # noqa: F401  (torchvision importable beside the CPU torch)

X = np.stack([np.arange(4.0).reshape(2, 2, 1) + 10 * i for i in range(3)]).astype(np.float32)  # 3 images 2x2x1


def test_mixup_hand_worked():
  """lam 0.75: each image is 0.75 itself + 0.25 its predecessor (the first takes the last); targets likewise,
  then smoothing eps=0.3: 0.7 t + 0.1 (catches a roll the wrong way, lam and 1 - lam swapped, smoothing first)."""
  got = np.asarray(mix.mixup(jnp.asarray(X), 0.75))[..., 0]
  np.testing.assert_array_equal(got, [[[5, 6], [7, 8]], [[7.5, 8.5], [9.5, 10.5]], [[17.5, 18.5], [19.5, 20.5]]])
  labels = jnp.array([0, 1, 2])
  t = mix.soft_targets(labels, jnp.roll(labels, 1), 0.75, 3)
  np.testing.assert_allclose(t, [[0.75, 0, 0.25], [0.25, 0.75, 0], [0, 0.25, 0.75]])
  t = mix.soft_targets(labels, jnp.roll(labels, 1), 0.75, 3, label_smoothing=0.3)
  np.testing.assert_allclose(t, [[0.625, 0.1, 0.275], [0.275, 0.625, 0.1], [0.1, 0.275, 0.625]], rtol=1e-6)
  m = mix.Mixed(jnp.asarray(X), labels, jnp.roll(labels, 1), jnp.float32(0.3))
  np.testing.assert_array_equal(mix.dominant(m), [2, 0, 1])    # lam < 1/2: the rolled label dominates


def test_cutmix_hand_worked():
  """4x4 images, lam 0.75: half-sides int(0.5 sqrt(0.25) 4) = 1; centre (1, 3) gives the box x 0..2, y 2..4
  (area 4/16, lam stays 0.75); centre (0, 0) is clipped to x 0..1, y 0..1 (area 1/16: lam 0.9375)."""
  x1, y1, x2, y2, lam = (int(v) if i < 4 else float(v) for i, v in enumerate(mix.cutmix_box(0.75, 1, 3, 4, 4)))
  assert (x1, y1, x2, y2) == (0, 2, 2, 4) and lam == 0.75
  box = mix.cutmix_box(0.75, 0, 0, 4, 4)
  assert tuple(int(v) for v in box[:4]) == (0, 0, 1, 1) and float(box[4]) == 0.9375
  images = jnp.stack([jnp.full((4, 4, 1), float(i)) for i in range(3)])
  out = np.asarray(mix.cutmix(images, (0, 2, 2, 4)))[..., 0]
  want = np.stack([np.full((4, 4), float(i)) for i in range(3)])
  want[:, 2:4, 0:2] = np.array([2.0, 0, 1])[:, None, None]  # rows 2-3, columns 0-1 from the predecessor
  np.testing.assert_array_equal(out, want)


def test_cutmix_box_and_lambda_equal_torchvision():
  """torchvision.transforms.v2.CutMix.make_params on a seeded torch, and cutmix_box on the same three draws
  (lam, r_x, r_y, drawn again in its order): the same clipped box and corrected lam, over sizes and seeds."""
  import torch
  from torchvision.transforms import v2
  for alpha in (0.2, 1.0):
    cm = v2.CutMix(alpha=alpha, num_classes=10)
    for h, w in ((32, 32), (28, 28), (7, 13)):
      img = torch.zeros(2, 1, h, w)
      for seed in range(40):
        torch.manual_seed(seed)
        p = cm.make_params([img])
        torch.manual_seed(seed)
        lam = float(cm._dist.sample(()))
        r_x, r_y = int(torch.randint(w, size=(1,))), int(torch.randint(h, size=(1,)))
        *box, lam_adj = mix.cutmix_box(jnp.float32(lam), r_x, r_y, h, w)
        assert tuple(int(b) for b in box) == p["box"], (alpha, h, w, seed)
        assert float(lam_adj) == pytest.approx(p["lam_adjusted"], abs=1e-7)


@pytest.mark.parametrize("kind", ["mixup", "cutmix"])
def test_mixed_batch_and_targets_equal_torchvision(kind):
  """The whole transform: torchvision's MixUp / CutMix on an NCHW float batch and its labels, against ours on
  the NHWC batch with torchvision's own draws (reproduced from the seed)."""
  import torch
  from torchvision.transforms import v2
  rng = np.random.default_rng(0)
  x = rng.uniform(-2, 2, (6, 3, 9, 11)).astype(np.float32)
  labels = np.array([3, 1, 4, 1, 5, 9])
  t = (v2.MixUp if kind == "mixup" else v2.CutMix)(alpha=1.0, num_classes=10)
  torch.manual_seed(7)
  want_x, want_t = t(torch.from_numpy(x), torch.from_numpy(labels))
  torch.manual_seed(7)
  xn = jnp.asarray(x.transpose(0, 2, 3, 1))
  if kind == "mixup":
    lam = float(t._dist.sample(()))
    got = mix.mixup(xn, lam)
  else:
    lam_raw = float(t._dist.sample(()))
    r_x, r_y = int(torch.randint(11, size=(1,))), int(torch.randint(9, size=(1,)))
    *box, lam = mix.cutmix_box(jnp.float32(lam_raw), r_x, r_y, 9, 11)
    got = mix.cutmix(xn, box)
  np.testing.assert_allclose(np.asarray(got).transpose(0, 3, 1, 2), want_x.numpy(), rtol=1e-6, atol=1e-6)
  targets = mix.soft_targets(jnp.asarray(labels), jnp.roll(jnp.asarray(labels), 1), jnp.float32(lam), 10)
  np.testing.assert_allclose(targets, want_t.numpy(), atol=1e-6)


def test_soft_loss_with_label_smoothing_equals_torch():
  """torch's cross_entropy(probability targets, label_smoothing=0.1), as the reference scripts train with
  mixed targets: our smoothed targets in the soft cross-entropy give the same losses."""
  import torch
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(5, 7)).astype(np.float32) * 3
  labels = np.array([0, 6, 2, 2, 5])
  rolled = np.roll(labels, 1)
  t = mix.soft_targets(jnp.asarray(labels), jnp.asarray(rolled), jnp.float32(0.625), 7)
  want = torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(np.asarray(t)),
                                           label_smoothing=0.1, reduction="none").numpy()
  got = steps.soft_cross_entropy(jnp.asarray(logits),
                                 mix.soft_targets(jnp.asarray(labels), jnp.asarray(rolled), 0.625, 7, 0.1))
  np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.slow
def test_mix_batch_prob_and_switch():
  """prob 0: never mixed (lam 1, images untouched); switch_prob 1: CutMix only (each pixel is the image's own or
  its predecessor's, and lam equals the fraction of own pixels); switch_prob 0: Mixup (lam in (0, 1), blended)."""
  x = jnp.asarray(np.random.default_rng(2).uniform(0, 1, (4, 8, 8, 1)).astype(np.float32))
  labels = jnp.arange(4)
  for seed in range(5):
    k = jax.random.PRNGKey(seed)
    m = mix.mix_batch(k, x, labels, mixup_alpha=1.0, cutmix_alpha=1.0, prob=0.0)
    assert float(m.lam) == 1.0 and np.array_equal(m.images, x)
    m = mix.mix_batch(k, x, labels, mixup_alpha=1.0, cutmix_alpha=1.0, switch_prob=1.0)
    own = np.asarray(m.images == x)[..., 0]
    assert np.all(own | np.asarray(m.images == jnp.roll(x, 1, 0))[..., 0])
    assert float(m.lam) == pytest.approx(own[0].mean())
    m = mix.mix_batch(k, x, labels, mixup_alpha=1.0, cutmix_alpha=1.0, switch_prob=0.0)
    np.testing.assert_allclose(m.images, m.lam * x + (1 - m.lam) * jnp.roll(x, 1, 0), atol=1e-6)


class _Linear(nn.Module):
  @nn.compact
  def __call__(self, x, train=False):
    return nn.Dense(5)(x.reshape(x.shape[0], -1))


@pytest.mark.slow
def test_train_step_loss_and_top1_use_the_mixed_targets_and_the_dominant_label():
  """The step's logged loss is the soft cross-entropy of the mixed, smoothed targets on the mixed images (drawn
  from fold_in(fold_in(state.rng, step), _MIX_STREAM)), and top-1 counts the dominant label, in numpy float64;
  the update is SGD on that loss's gradient (catches a hard-label loss, a top-1 against the own label, a draw
  from another key)."""
  model = _Linear()
  x = np.random.default_rng(3).normal(size=(8, 4, 4, 1)).astype(np.float32)
  labels = np.array([0, 1, 2, 3, 4, 0, 1, 2])
  tx = optax.sgd(0.1)
  state = state_lib.create(jax.random.PRNGKey(0), model, tx, (4, 4, 1))
  state = state.replace(step=jnp.int32(5))
  step = steps.make_train_step(model, tx, lambda c: 0.1, label_smoothing=0.1, mixup_alpha=0.4, cutmix_alpha=1.0)
  new, metrics = jax.jit(step)(state, {"image": jnp.asarray(x), "label": jnp.asarray(labels)})
  key = jax.random.fold_in(jax.random.fold_in(state.rng, 5), steps._MIX_STREAM)
  m = mix.mix_batch(key, jnp.asarray(x), jnp.asarray(labels), mixup_alpha=0.4, cutmix_alpha=1.0)
  assert 0 < float(m.lam) < 1
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), state.params)["Dense_0"]
  logits = np.asarray(m.images, np.float64).reshape(8, -1) @ p["kernel"] + p["bias"]
  t = np.asarray(mix.soft_targets(m.labels, m.rolled, m.lam, 5, 0.1), np.float64)
  logp = logits - logits.max(-1, keepdims=True)
  logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
  assert float(metrics["loss"]) == pytest.approx(-(t * logp).sum(), rel=1e-5)
  dom = np.where(float(m.lam) >= 0.5, labels, np.roll(labels, 1))
  assert float(metrics["top1"]) == np.sum(logits.argmax(-1) == dom)
  probs = np.exp(logp)
  grad_b = ((probs - t) / 8).sum(0)
  np.testing.assert_allclose(new.params["Dense_0"]["bias"], p["bias"] - 0.1 * grad_b, rtol=1e-4, atol=1e-6)
