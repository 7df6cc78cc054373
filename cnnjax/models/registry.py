"""Models found by name: `create(name, num_classes=..., **options)` and `names()`.

Each family module (resnet.py, vgg.py, ...) registers its names when `cnnjax.models` is imported. A registry entry is a
Linen module class plus the preset field values its name implies (`resnet50` is `ResNet`
with bottleneck blocks and stage sizes 3-4-6-3). Options are the module's dataclass fields; given options
override the preset. An unknown name or option fails with the list of valid ones.
"""
import dataclasses
import difflib
from typing import Any, Dict, Tuple, Type

import flax.linen as nn

from cnnjax.errors import ConfigError

_REGISTRY: Dict[str, Tuple[Type[nn.Module], Dict[str, Any]]] = {}
_RESERVED = {"parent", "name"}


def register(name: str, cls: Type[nn.Module], **preset: Any) -> None:
  if name in _REGISTRY:
    raise ValueError(f"model {name!r} is registered twice")
  _REGISTRY[name] = (cls, preset)


def names():
  """All registered model names, sorted."""
  return sorted(_REGISTRY)


def options(name: str):
  """The option names `create(name, ...)` accepts (besides num_classes)."""
  cls, _ = _lookup(name)
  return sorted(f.name for f in dataclasses.fields(cls)
                if f.name not in _RESERVED and f.name != "num_classes")


def check(name: str, option_names) -> None:
  """Raises ConfigError if `name` is unknown or any of `option_names` is not one of its options."""
  allowed = options(name)
  bad = sorted(set(option_names) - set(allowed))
  if bad:
    hint = "".join(f" (did you mean {m[0]!r} for {b!r}?)" for b in bad
                   if (m := difflib.get_close_matches(b, allowed, 1)))
    raise ConfigError(f"model {name!r} has no option(s) {bad}{hint}; its options are: {allowed}")


def check_values(name: str, opts) -> None:
  """Raises ConfigError if the option values `opts` cannot build model `name`: its family's `check()` (config
  fields only, run before any data is read or anything compiled; checks that need the data run when it is built)."""
  check(name, opts)
  cls, preset = _lookup(name)
  module = cls(num_classes=1, **{**preset, **opts})
  if hasattr(module, "check"):
    module.check()


def create(name: str, *, num_classes: int, **opts: Any) -> nn.Module:
  """Builds model `name` with `num_classes` outputs; `opts` are the family's options (see `options(name)`)."""
  cls, preset = _lookup(name)
  check(name, opts)
  if not isinstance(num_classes, int) or num_classes < 1:
    raise ConfigError(f"num_classes must be a positive int, got {num_classes!r}")
  return cls(num_classes=num_classes, **{**preset, **opts})


def _lookup(name: str):
  if name not in _REGISTRY:
    close = difflib.get_close_matches(name, list(_REGISTRY), 3)
    hint = f" Did you mean {close}?" if close else ""
    raise ConfigError(f"unknown model {name!r}.{hint} Known models: {sorted(_REGISTRY)}")
  return _REGISTRY[name]



def init_variables(model: nn.Module, input_shape, rng=None, *, dtype="float32", abstract: bool = False,
                   batch: int = 1):
  """`model.init` (params and dropout keys from `rng`) on a zero batch of `batch` `input_shape` examples of
  `dtype` (int32 for token ids), in eval mode; `abstract=True` traces shapes only, with no compute."""
  import jax
  import jax.numpy as jnp
  rng = jax.random.PRNGKey(0) if rng is None else rng
  init = lambda: model.init({"params": rng, "dropout": rng}, jnp.zeros((batch, *input_shape), dtype),
                            train=False)
  return jax.eval_shape(init) if abstract else init()
