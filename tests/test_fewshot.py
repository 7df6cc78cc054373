"""cnnjax.fewshot (FRiS, FRiS-Stolp, compactness, embed) against hand-worked cases, scipy and a brute-force
numpy reference; and dataset.classes, the class subset few-shot base training uses."""
import jax
import numpy as np
import pytest
from scipy.spatial.distance import cdist

from cnnjax import fewshot

# --- the FRiS function -----------------------------------------------------------------------------------------


def test_fris_on_1d_points_by_hand():
  # S(u, x | x') = (|u - x'| - |u - x|) / (|u - x'| + |u - x|) with x = 1, x' = 3.
  u = np.array([[0.0], [2.0], [3.0], [1.0], [-1.0]])
  want = [(3 - 1) / (3 + 1), 0.0, -1.0, 1.0, (4 - 2) / (4 + 2)]
  np.testing.assert_allclose(fewshot.fris(u, np.array([1.0]), np.array([3.0])), want, atol=1e-6)
  assert float(fewshot.fris(np.array([5.0]), np.array([5.0]), np.array([5.0]))) == 0.0   # 0 / 0 -> 0


@pytest.mark.parametrize("metric", fewshot.METRICS)
def test_fris_is_antisymmetric_scale_invariant_and_matches_numpy(metric):
  rng = np.random.default_rng(0)
  u, x, r = (rng.normal(size=(50, 7)) for _ in range(3))
  s = np.asarray(fewshot.fris(u, x, r, metric))
  np.testing.assert_allclose(s, -np.asarray(fewshot.fris(u, r, x, metric)), atol=1e-6)
  np.testing.assert_allclose(s, np.asarray(fewshot.fris(3.7 * u, 3.7 * x, 3.7 * r, metric)), atol=1e-5)
  d1 = np.array([cdist(a[None], b[None], metric)[0, 0] for a, b in zip(u, x)])
  d2 = np.array([cdist(a[None], b[None], metric)[0, 0] for a, b in zip(u, r)])
  np.testing.assert_allclose(s, (d2 - d1) / (d2 + d1), atol=1e-5)


@pytest.mark.parametrize("metric", fewshot.METRICS)
def test_pairwise_distances_match_scipy_over_uneven_blocks(metric):
  rng = np.random.default_rng(1)
  a, b = rng.normal(size=(37, 5)), rng.normal(size=(11, 5))
  np.testing.assert_allclose(fewshot.pairwise_distances(a, b, metric, block=16), cdist(a, b, metric), atol=2e-5)


# --- FRiS-Stolp --------------------------------------------------------------------------------------------------
# A: {0, 1, 2}, B: {10, 11} on a line. Worked by hand (module docstring's definitions):
#   rivals: 0, 1, 2 -> 10 (distances 10, 9, 8); 10 -> 2 (8), 11 -> 2 (9); every own neighbour at distance 1.
#   D(A candidates 0, 1, 2) = 0.8, 0.8653, 0.8222;  T = 0.8258, 0.8091, 0.7889  -> lam 1/2: E best at 1; lam 0: 0
#   D(B candidates 10, 11) = 0.9, 0.8889;            T = 0.7987, 0.8172          -> lam 1/2: 11; lam 1: 10
#   theta = 0.85, lam 1/2: stolp 1 covers only itself (S of 0 and 2 are 0.818, 0.778); of {0, 2}: D = 0.8, 0.833,
#   E = 0.8129, 0.8111 -> 0, covering only itself (S of 2 is 0.6); then 2. B: 11 (S of 10 is 0.778), then 10.
LINE_X = np.array([[0.0], [1.0], [2.0], [10.0], [11.0]])
LINE_Y = np.array([0, 0, 0, 1, 1])


@pytest.mark.parametrize("lam,theta,want", [(0.5, 0.0, {0: [1], 1: [4]}), (1.0, 0.0, {0: [1], 1: [3]}),
                                            (0.0, 0.0, {0: [0], 1: [4]}),
                                            (0.5, 0.85, {0: [1, 0, 2], 1: [4, 3]})])
def test_fris_stolp_on_a_hand_worked_line(lam, theta, want):
  got = fewshot.fris_stolp(LINE_X, LINE_Y, lam=lam, theta=theta)
  assert {c: v.tolist() for c, v in got.items()} == want


def _brute_force_stolps(x, y, lam, theta):
  """The module docstring's algorithm with plain loops in float64."""
  d = cdist(x, x)
  n = len(x)
  s = lambda j, a, b: 0.0 if d[j, a] + d[j, b] == 0 else (d[j, b] - d[j, a]) / (d[j, b] + d[j, a])
  rival = [min((k for k in range(n) if y[k] != y[j]), key=lambda k: d[j, k]) for j in range(n)]
  own = [min((k for k in range(n) if y[k] == y[j] and k != j), key=lambda k: d[j, k], default=None)
         for j in range(n)]
  out = {}
  for c in sorted(set(y.tolist())):
    left = [j for j in range(n) if y[j] == c]
    others = [q for q in range(n) if y[q] != c and own[q] is not None]
    out[c] = []
    while left:
      def eff(i):
        dfn = np.mean([s(j, i, rival[j]) for j in left])
        tol = np.mean([s(q, own[q], i) for q in others]) if others else 0.0
        return lam * dfn + (1 - lam) * tol
      best = max(left, key=lambda i: (eff(i), -i))
      out[c].append(best)
      left = [j for j in left if j != best and not s(j, best, rival[j]) > theta]
  return out


@pytest.mark.parametrize("lam,theta", [(0.5, 0.0), (0.2, 0.3), (1.0, -0.2)])
def test_fris_stolp_matches_a_brute_force_reference(lam, theta):
  rng = np.random.default_rng(2)
  x = rng.normal(size=(40, 3))
  y = rng.integers(0, 3, 40)                # overlapping classes: several stolps each
  got = fewshot.fris_stolp(x, y, lam=lam, theta=theta)
  want = _brute_force_stolps(x, y, lam, theta)
  assert {c: v.tolist() for c, v in got.items()} == want
  assert sum(len(v) for v in want.values()) > 3


def _blobs(centres, n, sigma, seed):
  rng = np.random.default_rng(seed)
  x = np.concatenate([c + sigma * rng.normal(size=(n, len(c))) for c in centres])
  return x, np.repeat(np.arange(len(centres)), n)


def test_two_separated_blobs_give_one_stolp_per_class_near_the_centre():
  centres = np.array([[0.0, 0.0], [10.0, 0.0]])
  x, y = _blobs(centres, 60, 1.0, 0)
  xt, yt = _blobs(centres, 200, 1.0, 1)
  clf = fewshot.FrisClassifier().fit(x, y)
  assert [len(v) for v in clf.stolps_.values()] == [1, 1]
  for c, (i,) in clf.stolps_.items():
    assert np.linalg.norm(x[i] - centres[c]) < 1.0            # within one sigma of its centre
  assert np.mean(clf.predict(xt) == yt) == 1.0


def test_xor_blobs_need_two_stolps_per_class_where_nearest_centroid_fails():
  centres = np.array([[4.0, 4.0], [-4.0, -4.0], [4.0, -4.0], [-4.0, 4.0]])
  x, blob = _blobs(centres, 40, 0.8, 3)
  xt, blobt = _blobs(centres, 100, 0.8, 4)
  y, yt = blob // 2, blobt // 2               # class 0: the diagonal blobs, class 1: the anti-diagonal ones
  clf = fewshot.FrisClassifier().fit(x, y)
  assert all(len(v) >= 2 for v in clf.stolps_.values())
  assert np.mean(clf.predict(xt) == yt) == 1.0
  centroids = np.stack([x[y == c].mean(0) for c in (0, 1)])
  nc = np.argmin(cdist(xt, centroids), 1)
  assert np.mean(nc == yt) < 0.75


def test_shuffling_the_sample_changes_nothing():
  x, y = _blobs(np.array([[0.0, 0.0], [2.0, 1.0], [1.0, 3.0]]), 30, 1.0, 5)
  perm = np.random.default_rng(6).permutation(len(x))
  a = fewshot.FrisClassifier().fit(x, y)
  b = fewshot.FrisClassifier().fit(x[perm], y[perm])
  for c in a.stolps_:
    np.testing.assert_array_equal(np.sort(perm[b.stolps_[c]]), np.sort(a.stolps_[c]))
  q = np.random.default_rng(7).normal(size=(50, 2)) * 2
  np.testing.assert_array_equal(a.predict(q), b.predict(q))
  assert fewshot.compactness(x, y) == pytest.approx(fewshot.compactness(x[perm], y[perm]), abs=1e-9)


def test_compactness_by_hand_and_rising_with_separation():
  # LINE: own at distance 1 for all; rivals at 10, 9, 8, 8, 9 -> S = 9/11, 8/10, 7/9, 7/9, 8/10.
  want = np.mean([9 / 11, 8 / 10, 7 / 9, 7 / 9, 8 / 10])
  assert fewshot.compactness(LINE_X, LINE_Y) == pytest.approx(want, abs=1e-6)
  values = [fewshot.compactness(*_blobs(np.array([[0.0, 0.0], [s, 0.0]]), 50, 1.0, 8)) for s in (0.0, 2.0, 8.0)]
  assert values[0] < values[1] < values[2]
  assert abs(values[0]) < 0.15 and values[2] > 0.6


def test_classifier_confidence_and_abstention_below_the_threshold():
  clf = fewshot.FrisClassifier(threshold=0.2).fit(np.array([[0.0], [10.0]]), np.array([3, 7]))
  q = np.array([[1.0], [4.0], [4.5], [5.0], [9.0]])
  label, conf = clf.decision(q)
  np.testing.assert_allclose(conf, [(9 - 1) / 10, (6 - 4) / 10, (5.5 - 4.5) / 10, 0.0, 8 / 10], atol=1e-6)
  np.testing.assert_array_equal(clf.predict(q), [3, 3, -1, -1, 7])
  two = fewshot.FrisClassifier().fit(np.array([[0.0], [10.0]]), np.array([3, 7]))
  np.testing.assert_array_equal(two.predict(q)[:3], [3, 3, 3])


def test_bad_input_is_named():
  with pytest.raises(ValueError, match="at least two classes"):
    fewshot.fris_stolp(np.zeros((3, 2)), np.zeros(3, int))
  with pytest.raises(ValueError, match="lam=2"):
    fewshot.fris_stolp(LINE_X, LINE_Y, lam=2)
  with pytest.raises(ValueError, match="metric='manhattan'"):
    fewshot.fris(LINE_X, LINE_X, LINE_X, "manhattan")


# --- embed -------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_embed_pools_globally_and_the_head_gives_the_logits():
  from cnnjax import models
  model = models.create("resnet20", num_classes=10, stage_sizes=(1, 1, 1))
  x = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (5, 8, 8, 1)))
  variables = jax.jit(lambda k, v: model.init(k, v, train=False))(jax.random.PRNGKey(1), x)
  feats = fewshot.embed(variables, ["stage3_block1", "head"], x, model=model, batch_size=2)
  logits = np.asarray(jax.jit(lambda v, a: model.apply(v, a, train=False))(variables, x))
  np.testing.assert_allclose(feats["head"], logits, atol=1e-5)
  w, b = (np.asarray(variables["params"]["head"][k]) for k in ("kernel", "bias"))
  assert feats["stage3_block1"].shape == (5, 64)
  np.testing.assert_allclose(feats["stage3_block1"] @ w + b, logits, atol=1e-4)   # the head reads the pooled map
  with pytest.raises(ValueError, match="stage9"):
    fewshot.embed(variables, ["head", "stage9"], x, model=model)


# --- dataset.classes -------------------------------------------------------------------------------------------------
def test_dataset_classes_keeps_only_those_labels():
  from sklearn.datasets import load_digits
  from cnnjax import data
  from cnnjax.data import sources
  from cnnjax.errors import ConfigError
  from configs import default
  c = default.get_config()
  c.dataset.classes = (2, 7)
  src, info = data.get_source(c.dataset, "test")
  train, test = sources.digits_split_indices()
  d = load_digits()
  keep = test[np.isin(d.target[test], (2, 7))]
  assert len(src) == len(keep) and info.num_classes == 10
  for i in (0, len(src) // 2, len(src) - 1):
    assert src[i]["label"] == d.target[keep[i]]
    np.testing.assert_array_equal(src[i]["image"][..., 0], np.round(d.images[keep[i]] * 255 / 16).astype(np.uint8))
  c.dataset.classes = (2, 12)
  with pytest.raises(ConfigError, match=r"dataset.classes=\(2, 12\)"):
    data.get_source(c.dataset, "test")


# --- experiments.fewshot: one episode ------------------------------------------------------------------------------
def test_episode_methods_on_xor_blobs_and_disjoint_episode_indices():
  from experiments import fewshot as exp
  centres = np.array([[4.0, 4.0], [-4.0, -4.0], [4.0, -4.0], [-4.0, 4.0]])
  xs, bs = _blobs(centres, 10, 0.5, 9)
  xq, bq = _blobs(centres, 25, 0.5, 10)
  r = exp.run_episode(xs, bs // 2, xq, bq // 2, shots=20)
  assert r["1-NN"] == r["k-NN"] == r["FRiS-Stolp"] == 1.0
  assert r["nearest centroid"] < 0.8 and r["stolps per class"] >= 2
  labels = np.repeat(np.arange(5, 10), 30)
  s, q = exp.episode_indices(labels, (5, 6, 7, 8, 9), 3, 4, np.random.default_rng(0))
  assert len(set(s) | set(q)) == 35 and not set(s) & set(q)
  np.testing.assert_array_equal(np.bincount(labels[s])[5:], [3] * 5)
  np.testing.assert_array_equal(np.bincount(labels[q])[5:], [4] * 5)
