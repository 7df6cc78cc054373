"""Data sets found by name: `register(name, source, info)`, `lookup(name)`, `names()`.

The module that defines a data set registers it when `cnnjax.data` is imported (sources.py: digits, synthetic,
the TFDS families, mnist and fashion_mnist, folder; text.py: the sentence data sets), as model families do in
cnnjax/models/registry.py. An entry is a pair of functions of config.dataset `d`:

- image data sets (kind 'image'): `source(d, split, name) -> (records, DatasetInfo)`, records
  {'image': uint8 HxWxC or encoded bytes, 'label': int}, which `sources.get_source` checks and selects
  (`dataset.classes`, `train_per_class`); `info(d, name) -> DatasetInfo`, opening as few files as it can.
- text data sets (kind 'text'): `source(d, split, name, vocab) -> (records, DatasetInfo)`, records
  {'tokens': int32 (max_len,), 'label': int}, checked as they are read; `info(d, name, vocab) -> DatasetInfo`.
  `vocab` is a `text.Vocab` (restored from a workdir), None for the training split's.

A family (`configs` given) also answers every 'name/<config>' (TFDS's 'imagenette/320px-v2'), its info checking
the config. An unknown name fails with the list of known ones.
"""
import dataclasses
import difflib
from typing import Callable, Dict, List, Optional, Tuple

from cnnjax.errors import ConfigError

KINDS = ("image", "text")


@dataclasses.dataclass(frozen=True)
class DataSet:
  name: str
  source: Callable
  info: Callable
  kind: str = "image"                       # one of KINDS: what a record holds and how it is checked
  configs: Optional[Tuple[str, ...]] = None  # a family: its 'name/<config>' names (() none but itself); None: not

  @property
  def is_text(self) -> bool:
    return self.kind == "text"

  def names(self) -> List[str]:
    """The dataset.name values this entry lists as known."""
    return [f"{self.name}/{c}" for c in self.configs] if self.configs else [self.name]


_REGISTRY: Dict[str, DataSet] = {}


def register(name: str, source: Callable, info: Callable, *, kind: str = "image",
             configs: Optional[Tuple[str, ...]] = None) -> None:
  """Makes `name` a dataset.name: `source` and `info` as the module docstring says."""
  if name in _REGISTRY:
    raise ValueError(f"data set {name!r} is registered twice")
  if kind not in KINDS:
    raise ValueError(f"data set {name!r}: kind {kind!r} is not one of {KINDS}")
  _REGISTRY[name] = DataSet(name, source, info, kind, None if configs is None else tuple(configs))


def names() -> List[str]:
  """Every accepted dataset.name (a family's configs spelled out), sorted."""
  return sorted(n for entry in _REGISTRY.values() for n in entry.names())


def lookup(name: str) -> DataSet:
  """The entry that serves dataset.name `name`: its own, else its family's ('imagenette' for 'imagenette/320px').
  Raises ConfigError listing the known names."""
  entry = _REGISTRY.get(name)
  if entry is None and "/" in name:
    family = _REGISTRY.get(name.split("/")[0])
    entry = family if family is not None and family.configs is not None else None
  if entry is None:
    close = difflib.get_close_matches(name, names(), 3)
    hint = f" Did you mean {close}?" if close else ""
    raise ConfigError(f"unknown data set dataset.name={name!r}.{hint} Known: {names()}")
  return entry


def is_text(name: str) -> bool:
  """Whether dataset.name `name` is a text data set (token ids and a vocabulary; raises if unknown)."""
  return lookup(name).is_text
