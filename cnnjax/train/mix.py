"""Mixup and CutMix inside the jitted train step, per batch, as torchvision.transforms.v2's MixUp and CutMix.

Each batch is paired with itself rolled by one (example i with example i-1, the first with the last), as
torchvision does; the pipeline's shuffle makes the pairs random.
- Mixup (Zhang et al. 2018): lam ~ Beta(alpha, alpha); image = lam * x + (1 - lam) * rolled.
- CutMix (Yun et al. 2019): lam ~ Beta(alpha, alpha); a box centred at a uniform pixel (r_x, r_y) with half-sides
  int(0.5 sqrt(1 - lam) W) and int(0.5 sqrt(1 - lam) H), clipped to the image, is pasted from the rolled batch;
  lam is then corrected to the area actually kept: 1 - box area / (H W).
The targets are lam * one_hot(label) + (1 - lam) * one_hot(rolled label) (label smoothing applied on top, as
torch's CrossEntropyLoss(label_smoothing=...) does with probability targets). With probability `prob` a batch
is mixed at all; with both alphas > 0, CutMix is chosen with probability `switch_prob`, else Mixup (torchvision's
reference scripts: RandomChoice of the two, prob 1, switch 0.5). Every draw comes from the key the step passes
(a fold_in of the state's key and the step), so a resumed run mixes exactly as an uninterrupted one.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


class Mixed(NamedTuple):
  images: jax.Array      # the mixed batch, NHWC
  labels: jax.Array      # (B,) each example's own label
  rolled: jax.Array      # (B,) the label of the example mixed in (the batch rolled by one)
  lam: jax.Array         # float32 scalar: the weight of `labels` in the targets (CutMix: corrected to the box)


def mixup(images, lam):
  """lam * x + (1 - lam) * (x rolled by one along the batch), in the images' dtype."""
  lam = jnp.asarray(lam, images.dtype)
  return jnp.roll(images, 1, axis=0) * (1 - lam) + images * lam


def cutmix_box(lam, r_x, r_y, height: int, width: int):
  """(x1, y1, x2, y2, corrected lam) of torchvision's CutMix for a drawn lam and box centre (r_x, r_y).

  Computed in float64 as torchvision does (a scalar, so it costs nothing): in float32, int(r * width) differs
  from torchvision's where r * width lies within float32 rounding of an integer."""
  with jax.enable_x64(True):
    r = 0.5 * jnp.sqrt(1.0 - jnp.asarray(lam, jnp.float64))
    r_w_half = jnp.floor(r * width).astype(jnp.int32)    # int() of a non-negative number
    r_h_half = jnp.floor(r * height).astype(jnp.int32)
    x1, y1 = jnp.maximum(r_x - r_w_half, 0), jnp.maximum(r_y - r_h_half, 0)
    x2, y2 = jnp.minimum(r_x + r_w_half, width), jnp.minimum(r_y + r_h_half, height)
    area = ((x2 - x1) * (y2 - y1)).astype(jnp.float64)
    lam_adjusted = (1.0 - area / (width * height)).astype(jnp.float32)
  return x1, y1, x2, y2, lam_adjusted


def cutmix(images, box):
  """The batch with the pixels in [y1, y2) x [x1, x2) taken from the batch rolled by one (NHWC)."""
  x1, y1, x2, y2 = box
  h, w = images.shape[1:3]
  ys, xs = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
  inside = (ys >= y1) & (ys < y2) & (xs >= x1) & (xs < x2)
  return jnp.where(inside[None, :, :, None], jnp.roll(images, 1, axis=0), images)


def soft_targets(labels, rolled, lam, num_classes: int, label_smoothing: float = 0.0):
  """lam * one_hot(labels) + (1 - lam) * one_hot(rolled), then smoothed: (1 - eps) t + eps / K."""
  t = jax.nn.one_hot(rolled, num_classes) * (1 - lam) + jax.nn.one_hot(labels, num_classes) * lam
  return optax.smooth_labels(t, label_smoothing) if label_smoothing else t


def dominant(m: Mixed):
  """The label with the larger weight (its own label on a tie): the one the train top-1 is counted against."""
  return jnp.where(m.lam >= 0.5, m.labels, m.rolled)


def mix_batch(rng, images, labels, *, mixup_alpha: float, cutmix_alpha: float, prob: float = 1.0,
              switch_prob: float = 0.5) -> Mixed:
  """Draws and applies this batch's Mixup or CutMix (see the module docstring); unmixed: lam = 1."""
  k_apply, k_switch, k_mix, k_cut, k_x, k_y = jax.random.split(rng, 6)
  h, w = images.shape[1:3]
  rolled = jnp.roll(labels, 1, axis=0)
  one = jnp.ones((), jnp.float32)
  out_images, lam = images, one
  if mixup_alpha > 0:
    lam_m = jax.random.beta(k_mix, mixup_alpha, mixup_alpha).astype(jnp.float32)
    mixed_m = mixup(images, lam_m)
  if cutmix_alpha > 0:
    lam_c = jax.random.beta(k_cut, cutmix_alpha, cutmix_alpha).astype(jnp.float32)
    r_x, r_y = jax.random.randint(k_x, (), 0, w), jax.random.randint(k_y, (), 0, h)
    x1, y1, x2, y2, lam_c = cutmix_box(lam_c, r_x, r_y, h, w)
    mixed_c = cutmix(images, (x1, y1, x2, y2))
  if mixup_alpha > 0 and cutmix_alpha > 0:
    use_cut = jax.random.uniform(k_switch) < switch_prob
    out_images, lam = jnp.where(use_cut, mixed_c, mixed_m), jnp.where(use_cut, lam_c, lam_m)
  elif mixup_alpha > 0:
    out_images, lam = mixed_m, lam_m
  elif cutmix_alpha > 0:
    out_images, lam = mixed_c, lam_c
  apply = jax.random.uniform(k_apply) < prob
  return Mixed(jnp.where(apply, out_images, images), labels, rolled, jnp.where(apply, lam, one))
