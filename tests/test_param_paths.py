"""The one rule by which a regex selects parameters (cnnjax.param_paths), worked by hand on a small tree, and the
same selection from every user of it: frozen, lr_mults, max_norm_pattern, batch norm's frozen statistics."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnnjax import param_paths
from cnnjax.layers import batch_norm
from cnnjax.train import optim, transfer

# Paths, by hand: stem_conv/kernel, stage1_block1/Conv_0/kernel, stage1_block1/BatchNorm_0/scale,
# stage1_block1/BatchNorm_0/bias, prehead/kernel, head/kernel, head/bias.
TREE = {"stem_conv": {"kernel": 1}, "stage1_block1": {"Conv_0": {"kernel": 2}, "BatchNorm_0": {"scale": 3, "bias": 4}},
        "prehead": {"kernel": 5}, "head": {"kernel": 6, "bias": 7}}
PATHS = ["head/bias", "head/kernel", "prehead/kernel", "stage1_block1/BatchNorm_0/bias",
         "stage1_block1/BatchNorm_0/scale", "stage1_block1/Conv_0/kernel", "stem_conv/kernel"]


def _selected(tree_of_bools):
  return sorted(p for p, v in param_paths.flatten(tree_of_bools).items() if v)


def test_paths_are_keys_joined_by_slashes():
  assert sorted(param_paths.flatten(TREE)) == PATHS
  with_paths = jax.tree_util.tree_flatten_with_path({"a": [{"b": 0}, 1]})[0]
  assert [param_paths.path_str(p) for p, _ in with_paths] == ["a/0/b", "a/1"]
  assert param_paths.path_str(("stage1_block1", "BatchNorm_0", "scale")) == "stage1_block1/BatchNorm_0/scale"


@pytest.mark.parametrize("pattern, want", [
    ("head", ["head/bias", "head/kernel", "prehead/kernel"]),      # anywhere in the path: re.search
    ("^head/", ["head/bias", "head/kernel"]),                      # anchored: the top-level module only
    ("kernel$", ["head/kernel", "prehead/kernel", "stage1_block1/Conv_0/kernel", "stem_conv/kernel"]),
    ("^(stem|stage1)_", ["stage1_block1/BatchNorm_0/bias", "stage1_block1/BatchNorm_0/scale",
                         "stage1_block1/Conv_0/kernel", "stem_conv/kernel"]),
    ("^(?!head/)", [p for p in PATHS if not p.startswith("head/")]),   # everything but the head
    ("BatchNorm_0/scale", ["stage1_block1/BatchNorm_0/scale"]),
    ("", []),                                                      # '' (a field's "off") selects nothing
])
def test_the_rule_by_hand(pattern, want):
  assert [p for p in PATHS if param_paths.matches(pattern, p)] == want
  assert _selected(param_paths.labels(TREE, [(pattern, True)], False)) == want
  rest, chosen = param_paths.partition(param_paths.flatten(TREE), pattern)
  assert sorted(chosen) == want and sorted(rest) == sorted(set(PATHS) - set(want))


def test_several_patterns_and_first_matching_label():
  either = param_paths.labels(TREE, [("^stem", True), ("bias$", True)], False)
  assert _selected(either) == ["head/bias", "stage1_block1/BatchNorm_0/bias", "stem_conv/kernel"]
  labels = param_paths.flatten(param_paths.labels(TREE, [("^head/", 10.0), ("head", 2.0), ("", 5.0)], 1.0))
  assert labels == {"head/bias": 10.0, "head/kernel": 10.0, "prehead/kernel": 2.0,
                    **{p: 1.0 for p in PATHS if "head" not in p}}


@pytest.mark.parametrize("pattern", ["head", "^(stem|stage1)_", "BatchNorm_0/scale", "kernel$"])
def test_every_user_selects_what_the_rule_selects(pattern):
  """frozen (labels and the split of the gradient), lr_mults, max_norm_pattern and batch norm's frozen statistics
  pick the same parameters as param_paths.matches."""
  want = [p for p in PATHS if param_paths.matches(pattern, p)]
  params = jax.tree.map(lambda _: jnp.full((2, 2), 10.0), TREE)
  zeros = jax.tree.map(jnp.zeros_like, params)

  frozen = param_paths.flatten(transfer.frozen_labels(pattern)(params))
  assert sorted(p for p, lab in frozen.items() if lab == "frozen") == want
  assert sorted(transfer.partition(params, pattern)[1]) == want

  scaled, _ = transfer.scale_by_regex([(pattern, 3.0)]).update(jax.tree.map(jnp.ones_like, params), optax.EmptyState())
  assert sorted(p for p, u in param_paths.flatten(scaled).items() if float(u[0, 0]) == 3.0) == want

  # Columns of norm 10 * sqrt(2) > 1: max_norm moves exactly the parameters it constrains.
  moved, _ = optim.max_norm(1.0, pattern).update(zeros, optax.EmptyState(), params)
  assert sorted(p for p, u in param_paths.flatten(moved).items() if np.any(np.asarray(u) != 0)) == want

  with batch_norm.frozen_statistics(pattern):
    bn_frozen = batch_norm._frozen(("stage1_block1", "BatchNorm_0"), ["scale", "bias"])
  assert bn_frozen == all(p in want for p in ("stage1_block1/BatchNorm_0/scale", "stage1_block1/BatchNorm_0/bias"))
