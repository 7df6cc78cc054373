"""Rules over parameter paths: which leaves of a pytree a regex selects, one way for every config field that
names parameters (`frozen`, `lr_mults`, `max_norm_pattern`, `init.dont_load`) and for batch norm's frozen
statistics.

A leaf's path is its keys joined by '/': 'stage1_block1/Conv_0/kernel' (in a params tree), or
'params/head/kernel' where the tree holds several collections (`init.dont_load`). A pattern selects a path when
`re.search` finds it anywhere in the path: 'head' selects 'head/kernel' and 'params/head/bias'; anchor it to
say more ('^head/', 'output/kernel$', '^(stem|stage1)_'). An empty pattern selects nothing (the config's '' for
"off").
"""
import re
from typing import Any, Dict, Sequence, Tuple, Union

import flax
import jax

Pattern = Union[str, re.Pattern]


def path_str(path) -> str:
  """The '/'-joined path of a leaf: a jax key path (DictKey, GetAttrKey, SequenceKey, ...) or a tuple of names."""
  return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def matches(pattern: Pattern, path: str) -> bool:
  """Whether `pattern` selects `path`: `re.search`, a match anywhere unless anchored; '' selects nothing."""
  return bool(pattern) and re.search(pattern, path) is not None


def _as_list(patterns) -> list:
  return [patterns] if isinstance(patterns, (str, re.Pattern)) else list(patterns)


def flatten(tree) -> Dict[str, Any]:
  """{'/'-joined path: leaf} of a (possibly frozen or struct) tree of nested dicts."""
  return flax.traverse_util.flatten_dict(flax.serialization.to_state_dict(tree), sep="/")


def labels(tree, rules: Sequence[Tuple[Pattern, Any]], default: Any = None):
  """A tree shaped as `tree` whose leaves are the label of the first (pattern, label) rule selecting the leaf's
  path, else `default` (as optax.multi_transform's labels, or per-leaf multipliers)."""
  rules = [(p, label) for p, label in rules if p]

  def label(path, _):
    p = path_str(path)
    return next((lab for pattern, lab in rules if matches(pattern, p)), default)
  return jax.tree_util.tree_map_with_path(label, tree)


def partition(flat: Dict[str, Any], patterns: Union[Pattern, Sequence[Pattern]]):
  """(unselected, selected): the {path: leaf} dict `flat` split by whether any of `patterns` selects the path."""
  pats = _as_list(patterns)
  hit = {p: any(matches(r, p) for r in pats) for p in flat}
  return {p: v for p, v in flat.items() if not hit[p]}, {p: v for p, v in flat.items() if hit[p]}
