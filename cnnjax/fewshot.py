"""FRiS, Zagoruiko's function of rival similarity, and FRiS-Stolp prototypes as a few-shot classifier.

Zagoruiko, Borisova, Dyubanov, Kutnenko, "Methods of recognition based on the function of rival similarity",
Pattern Recognition and Image Analysis 18(1), 2008. For an object u, a candidate x and its rival x':

  S(u, x | x') = (rho(u, x') - rho(u, x)) / (rho(u, x') + rho(u, x))      in [-1, 1]; 0 when both are 0

+1: u coincides with x; 0: u is as far from x as from x'; -1: u coincides with x'. S(u, x | x') = -S(u, x' | x)
and S does not change when every distance is scaled (rho(a u, a x) = |a| rho(u, x) for both metrics here).

FRiS-Stolp as implemented (`fris_stolp`), for each class c in turn (classes are independent in this version):
  rival r(j)   of an object j: the nearest object of any other class (fixed for the whole run);
  own n(q)     of an object q: the nearest other object of q's class (objects of a one-object class have none);
  defensibility D(i) of a candidate i of class c: mean over the not-yet-covered objects j of class c (i itself
               included, with S = 1) of S(x_j, x_i | x_r(j)), how well i stands in for them against their rivals;
  tolerance T(i): mean over the objects q of the other classes that have an own neighbour of S(x_q, x_n(q) | x_i),
               how little i attracts them away from their own class (0 when no such q exists);
  efficiency E(i) = lam * D(i) + (1 - lam) * T(i).
  Loop: among the uncovered objects of c, the candidate with the largest E (ties: the first in input order)
  becomes a stolp; every uncovered object j of c with S(x_j, x_stolp | x_r(j)) > theta is covered (the stolp
  always is); repeat until every object of c is covered.
The paper also iterates the choice with rivals taken among the other classes' stolps; this version keeps the
nearest-object rivals of its first step.

`FrisClassifier` labels u by its nearest stolp s1 and reports the confidence S(u, s1 | s2), s2 the nearest stolp
of another class (>= 0 by construction); below `threshold` it abstains with the label -1. `compactness` is the
mean over all objects of S(x_j, x_n(j) | x_r(j)) (leave-one-out nearest own against nearest rival).
Distances are computed by jitted blocks in float32; everything else is numpy.
"""
import functools
from typing import Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax import build, viz
from cnnjax.errors import ConfigError

METRICS = ("euclidean", "cosine")


def _check_metric(metric):
  if metric not in METRICS:
    raise ValueError(f"metric={metric!r} is not one of {METRICS}")


def _rho(a, b, metric):
  """Distance between matching rows (broadcast over leading axes) of a and b."""
  if metric == "euclidean":
    return jnp.sqrt(jnp.sum(jnp.square(a - b), axis=-1))
  na, nb = jnp.linalg.norm(a, axis=-1), jnp.linalg.norm(b, axis=-1)
  return 1.0 - jnp.sum(a * b, axis=-1) / jnp.maximum(na * nb, 1e-30)


def fris_from_distances(d_own, d_rival):
  """S from the two distances rho(u, x) = d_own and rho(u, x') = d_rival (arrays of any matching shape)."""
  d_own, d_rival = np.asarray(d_own, np.float64), np.asarray(d_rival, np.float64)
  total = d_own + d_rival
  return np.where(total > 0, (d_rival - d_own) / np.where(total > 0, total, 1.0), 0.0)


def fris(u, x, x_rival, metric: str = "euclidean"):
  """S(u, x | x_rival) for points (..., d), broadcast over leading axes; 0 where both distances are 0."""
  _check_metric(metric)
  u, x, x_rival = (jnp.asarray(a, jnp.float32) for a in (u, x, x_rival))
  d_own, d_rival = _rho(u, x, metric), _rho(u, x_rival, metric)
  total = d_own + d_rival
  return jnp.where(total > 0, (d_rival - d_own) / jnp.where(total > 0, total, 1.0), 0.0)


@functools.partial(jax.jit, static_argnames=("metric",))
def _block_distances(a, b, metric):
  if metric == "euclidean":
    sq = (jnp.sum(a * a, 1)[:, None] + jnp.sum(b * b, 1)[None, :]
          - 2 * jnp.matmul(a, b.T, precision=jax.lax.Precision.HIGHEST))
    return jnp.sqrt(jnp.maximum(sq, 0.0))
  an = a / jnp.maximum(jnp.linalg.norm(a, axis=1, keepdims=True), 1e-30)
  bn = b / jnp.maximum(jnp.linalg.norm(b, axis=1, keepdims=True), 1e-30)
  return jnp.maximum(1.0 - jnp.matmul(an, bn.T, precision=jax.lax.Precision.HIGHEST), 0.0)


def pairwise_distances(a, b, metric: str = "euclidean", block: int = 1024) -> np.ndarray:
  """(len(a), len(b)) distances, computed by jitted row blocks of `block` (the last one padded, one compile)."""
  _check_metric(metric)
  a, b = np.asarray(a, np.float32), jnp.asarray(b, jnp.float32)
  out = np.empty((len(a), b.shape[0]), np.float32)
  step = min(block, len(a))
  for s in range(0, len(a), step):
    rows = a[s:s + step]
    pad = np.zeros((step - len(rows), a.shape[1]), np.float32)
    out[s:s + len(rows)] = np.asarray(_block_distances(jnp.asarray(np.concatenate([rows, pad])), b, metric))[:len(rows)]
  return out


def _check_sample(features, labels):
  features, labels = np.asarray(features), np.asarray(labels)
  if features.ndim != 2 or labels.shape != (len(features),):
    raise ValueError(f"features must be (n, d) and labels (n,); got {features.shape} and {labels.shape}")
  if len(np.unique(labels)) < 2:
    raise ValueError(f"FRiS needs at least two classes (rivals); labels hold {np.unique(labels).tolist()}")
  return features, labels


@functools.partial(jax.jit, static_argnames=("metric",))
def _neighbour_block(rows, row_labels, row_ids, x, labels, metric):
  """For a block of objects: distance to the nearest rival; index and distance of the nearest own neighbour."""
  d = _block_distances(rows, x, metric)
  other = labels[None, :] != row_labels[:, None]
  own = ~other & (jnp.arange(x.shape[0])[None, :] != row_ids[:, None])
  d_own = jnp.where(own, d, jnp.inf)
  return jnp.min(jnp.where(other, d, jnp.inf), 1), jnp.argmin(d_own, 1), jnp.min(d_own, 1)


@functools.partial(jax.jit, static_argnames=("metric",))
def _tolerance_block(rows, row_labels, x, labels, d_own, metric):
  """T of each object of a block as a candidate of its class: mean over the objects q of the other classes that
  have an own neighbour of S(x_q, own(q) | candidate) = (rho(q, cand) - rho(q, own)) / (rho(q, cand) + rho(q, own))."""
  d = _block_distances(rows, x, metric)
  q = (labels[None, :] != row_labels[:, None]) & jnp.isfinite(d_own)[None, :]
  d_own = jnp.where(jnp.isfinite(d_own), d_own, 0.0)[None, :]
  total = d + d_own
  s = jnp.where(total > 0, (d - d_own) / jnp.where(total > 0, total, 1.0), 0.0)
  return jnp.sum(jnp.where(q, s, 0.0), 1) / jnp.maximum(jnp.sum(q, 1), 1)


def _by_blocks(fn, features, labels, extra, block=512):
  """fn(rows, row_labels, *extra(row_ids), x, labels) over row blocks of the sample (the last block padded, so
  one compile), outputs concatenated."""
  n = len(features)
  step = min(block, n)
  x, lab = jnp.asarray(features, jnp.float32), jnp.asarray(labels)
  outs = []
  for s in range(0, n, step):
    ids = np.arange(s, s + step)
    ids = np.where(ids < n, ids, n - 1)   # padding rows repeat the last object; their outputs are dropped
    outs.append([np.asarray(o)[:min(step, n - s)] for o in fn(x[ids], lab[ids], *extra(ids), x, lab)])
  return [np.concatenate(parts) for parts in zip(*outs)]


def _neighbours(features, labels, metric):
  """Per object: distance to its nearest rival (other class), index and distance of its nearest own-class
  neighbour (index -1 and distance inf when its class has no other object)."""
  fn = lambda rows, row_labels, row_ids, x, lab: _neighbour_block(rows, row_labels, row_ids, x, lab, metric)
  d_rival, own, d_own = _by_blocks(fn, features, labels, lambda ids: (jnp.asarray(ids),))
  has_own = np.isfinite(d_own)
  return d_rival.astype(np.float64), np.where(has_own, own, -1), d_own.astype(np.float64)


def fris_stolp(features, labels, *, lam: float = 0.5, theta: float = 0.0,
               metric: str = "euclidean") -> Dict[int, np.ndarray]:
  """{class: indices of its stolps, in the order chosen}; see the module docstring for the definitions."""
  features, labels = _check_sample(features, labels)
  if not 0 <= lam <= 1:
    raise ValueError(f"lam={lam!r} is invalid: in [0, 1]")
  if not -1 <= theta < 1:
    raise ValueError(f"theta={theta!r} is invalid: in [-1, 1)")
  d_rival, own, d_own = _neighbours(features, labels, metric)
  d_own32 = jnp.asarray(d_own, jnp.float32)
  fn = lambda rows, row_labels, x, lab: (_tolerance_block(rows, row_labels, x, lab, d_own32, metric),)
  (tol,) = _by_blocks(fn, features, labels, lambda ids: ())
  stolps = {}
  for c in np.unique(labels):
    idx = np.flatnonzero(labels == c)
    # s_own[i, j] = S(x_j, x_i | rival of j) for candidates i and objects j of class c.
    s_own = fris_from_distances(pairwise_distances(features[idx], features[idx], metric), d_rival[idx][None, :])
    uncovered = np.ones(len(idx), bool)
    chosen = []
    while uncovered.any():
      defence = s_own[:, uncovered].mean(1)
      eff = np.where(uncovered, lam * defence + (1 - lam) * tol[idx], -np.inf)
      best = int(np.argmax(eff))
      chosen.append(best)
      uncovered &= ~(s_own[best] > theta)
      uncovered[best] = False
    stolps[c.item()] = idx[chosen]
  return stolps


def compactness(features, labels, metric: str = "euclidean") -> float:
  """Mean over objects with an own-class neighbour of S(x_j, x_own(j) | x_rival(j)): 1 for classes that are
  points far apart, about 0 or below when they interleave."""
  features, labels = _check_sample(features, labels)
  d_rival, own, d_own = _neighbours(features, labels, metric)
  ok = own >= 0
  if not ok.any():
    raise ValueError("compactness needs a class with at least two objects")
  return float(fris_from_distances(d_own[ok], d_rival[ok]).mean())


class FrisClassifier:
  """Nearest-stolp classifier with the FRiS value as confidence; abstains (label -1) below `threshold`."""

  def __init__(self, lam: float = 0.5, theta: float = 0.0, threshold: Optional[float] = None,
               metric: str = "euclidean"):
    _check_metric(metric)
    self.lam, self.theta, self.threshold, self.metric = lam, theta, threshold, metric

  def fit(self, features, labels):
    features, labels = _check_sample(features, labels)
    self.stolps_ = fris_stolp(features, labels, lam=self.lam, theta=self.theta, metric=self.metric)
    idx = np.concatenate(list(self.stolps_.values()))
    self.stolp_features_, self.stolp_labels_ = features[idx], labels[idx]
    return self

  def decision(self, features):
    """(nearest stolp's label, confidence S(u, nearest stolp | nearest stolp of another class))."""
    d = pairwise_distances(features, self.stolp_features_, self.metric).astype(np.float64)
    first = d.argmin(1)
    label = self.stolp_labels_[first]
    d1 = d[np.arange(len(d)), first]
    d2 = np.where(self.stolp_labels_[None, :] != label[:, None], d, np.inf).min(1)
    return label, fris_from_distances(d1, d2)

  def predict(self, features):
    label, conf = self.decision(features)
    if self.threshold is None:
      return label
    return np.where(conf >= self.threshold, label, -1)


def embed(workdir_or_variables, layers, images, *, model=None, batch_size: int = 256):
  """Features (n, channels) of module `layers` (a whole module path, e.g. 'stage3_block3', or a list of them,
  giving {path: features}) for preprocessed images: feature maps (n, H, W, C) are globally average-pooled to
  (n, C); a vector output (a dense layer's) is kept as it is.

  `workdir_or_variables`: a training workdir (model and variables rebuilt by cnnjax.build.load_workdir) or a
  variables dict, in which case `model` is required.
  """
  import re
  if isinstance(workdir_or_variables, str):
    model, variables, _, _ = build.load_workdir(workdir_or_variables)
  elif model is None:
    raise ValueError("embed(variables, ...) needs model=; or pass a workdir")
  else:
    variables = workdir_or_variables
  names = [layers] if isinstance(layers, str) else list(layers)
  maps = viz.feature_maps(model, variables, images, "|".join(map(re.escape, names)), batch_size=batch_size,
                          pool=True)
  missing = [n for n in names if n not in maps]
  if missing:
    raise ConfigError(f"layers {missing} are not modules of {type(model).__name__}; some that are: {list(maps)}")
  return maps[names[0]] if isinstance(layers, str) else {n: maps[n] for n in names}
