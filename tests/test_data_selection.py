"""dataset.classes, dataset.relabel and dataset.train_per_class against scikit-learn's digits read directly."""
import numpy as np
import pytest
from sklearn.datasets import load_digits

from cnnjax import data
from cnnjax.errors import ConfigError
from tests.helpers import tiny_config


def _raw_digits(split):
  """(images uint8 8x8x1, labels) of the digits split, computed from sklearn here (the split rule of sources.py:
  within each class, every fifth example is a test example)."""
  d = load_digits()
  rank = np.array([np.sum(d.target[:i] == d.target[i]) for i in range(len(d.target))])
  idx = np.flatnonzero((rank % 5 == 4) == (split == "test"))
  return np.round(d.images[idx] * (255.0 / 16.0)).astype(np.uint8)[..., None], d.target[idx]


def _records(d, split):
  source, info = data.get_source(d, split)
  return [source[i] for i in range(len(source))], info


def _dataset(**fields):
  c = tiny_config(**{f"dataset.{k}": v for k, v in fields.items()})
  return c.dataset


@pytest.mark.parametrize("k", [1, 5])
def test_k_per_class_relabelled_are_distinct_training_images_of_those_classes(k):
  images, labels = _raw_digits("train")
  classes = (7, 2, 9)
  records, info = _records(_dataset(classes=classes, relabel=True, train_per_class=k, subset_seed=3), "train")
  assert info.num_classes == 3 and len(records) == 3 * k
  found = []
  for r in records:
    match = np.flatnonzero(np.all(images == r["image"], axis=(1, 2, 3)))
    assert len(match) >= 1
    assert labels[match[0]] == classes[r["label"]]  # classes[i] became label i
    found.append(match[0])
  assert len(set(found)) == 3 * k
  assert np.bincount([r["label"] for r in records], minlength=3).tolist() == [k] * 3


def test_subsets_are_deterministic_nested_and_change_with_the_seed():
  pick = lambda k, seed: [r["image"].tobytes() for r in _records(_dataset(train_per_class=k, subset_seed=seed),
                                                                   "train")[0]]
  one, five = pick(1, 0), pick(5, 0)
  assert pick(1, 0) == one and len(one) == 10 and set(one) <= set(five)
  assert set(pick(5, 1)) != set(five)


def test_the_eval_split_keeps_every_example_of_the_classes():
  images, labels = _raw_digits("test")
  records, info = _records(_dataset(classes=(5, 6, 7, 8, 9), relabel=True, train_per_class=1), "test")
  want = np.isin(labels, (5, 6, 7, 8, 9))
  np.testing.assert_array_equal(np.stack([r["image"] for r in records]), images[want])
  np.testing.assert_array_equal([r["label"] for r in records], labels[want] - 5)
  assert data.eval_source(_dataset(classes=(5, 6, 7, 8, 9), relabel=True))[1].num_classes == 5


def test_without_relabel_labels_keep_their_values():
  records, info = _records(_dataset(classes=(5, 9), train_per_class=2), "train")
  assert info.num_classes == 10 and sorted(r["label"] for r in records) == [5, 5, 9, 9]


@pytest.mark.parametrize("fields, message", [
    (dict(relabel=True), r"relabel=True needs config.dataset.classes"),
    (dict(train_per_class=0), r"train_per_class=0 is invalid: an int >= 1, or -1"),
    (dict(train_per_class=200), r"train_per_class=200 but class 0 of 'digits' split 'train' has only 143 examples"),
    (dict(classes=(1, 1)), r"classes=\(1, 1\) is invalid"),
])
def test_bad_selections_name_the_field(fields, message):
  with pytest.raises(ConfigError, match=message):
    data.get_source(_dataset(**fields), "train")
