"""Starting a run from other weights, and training only part of a network (as big_vision's `model_init`,
`dont_load` and frozen parameters).

- `init.checkpoint`: a cnnjax workdir (its newest step, or `init.step`) or a directory converted by
  `python -m cnnjax.pretrained`. Applied once, to a run that has no checkpoint of its own; a resumed run restores
  its own state and never applies the init again.
- `init.dont_load`: regexes over '/'-joined parameter paths ('params/head/kernel'; cnnjax.param_paths says how a
  pattern selects a path, one rule for every field here) that keep their fresh values
  (a new head for a new number of classes). Every other leaf must be in the init with the same shape: a
  missing, unexpected or reshaped leaf not covered by `dont_load` fails, listing them.
- `init.load_batch_stats`: also take the running statistics of batch norm.
- `init.ema`: take a workdir's exponential moving average of the weights (and of the batch-norm statistics)
  instead of its raw weights (its run had `ema.decay` > 0); so a linear probe or a fine-tuning starts from them.
- `frozen`: a regex; matching parameters get no update, no weight decay and no optimizer state (optax's
  `set_to_zero` in a `multi_transform`), and no gradient is computed for them (the train step differentiates
  only the other parameters, so XLA drops the backward pass below the lowest trainable layer). A batch norm
  whose scale and bias are both frozen runs as in evaluation, also in training: it normalises with its running
  statistics and keeps them bit for bit. This differs from PyTorch's `requires_grad=False`, which leaves the
  layer in train mode (batch statistics, running averages updated) unless the module is put in `eval()`.
- `lr_mults`: ((regex, multiplier), ...): the updates of matching parameters are scaled (first match wins).
- `init.preprocessing`: with a converted directory, the images are normalised as its weights expect (the mean
  and std of its pretrained.json, GoogLeNet's `transform_input` folded in), grey images are replicated to its
  three channels, and `dataset.image_size` must be its input size; the run writes what it applied to
  preprocessing.json in its workdir.
"""
import dataclasses
import logging
from typing import Any, Dict, Sequence, Tuple

import flax
import jax
import numpy as np
import optax

from cnnjax import checkpoint, param_paths, pretrained
from cnnjax import workdir as workdir_lib
from cnnjax.errors import ConfigError

log = logging.getLogger("cnnjax")


def load_init(directory: str, step: int = -1, ema: bool = False) -> Dict[str, Any]:
  """{'params': ..., 'batch_stats': ...} (numpy) of a workdir or a converted pretrained directory; `ema`
  (init.ema): a workdir's moving average of the weights instead of its raw weights."""
  d = workdir_lib.path(directory)
  if (d / "pretrained.json").exists():
    if ema:
      raise ConfigError(f"config.init.ema=True but {directory} is a converted pretrained directory, which holds "
                        "one set of weights (no moving average): set init.ema=False")
    return pretrained.load(directory)[2]
  state, s = checkpoint.load_numpy(directory, None if step < 0 else step)
  if ema:
    if "ema" not in state:
      raise ConfigError(f"config.init.ema=True but the checkpoint of step {s} in {directory} holds no moving "
                        "average of the weights (its run had ema.decay=0): set init.ema=False")
    state = state["ema"]
  return {"params": state["params"], "batch_stats": state.get("batch_stats", {})}


def pretrained_preprocessing(config, info):
  """(info, applied): `info` with the normalisation and channel count of `init.checkpoint`'s pretrained.json
  when it is a converted directory and `init.preprocessing` is on, with a record of what was applied; else
  (info, None)."""
  i = config.init
  meta = workdir_lib.read_json(workdir_lib.path(i.checkpoint) / "pretrained.json") if i.checkpoint else None
  if meta is None or not i.preprocessing:
    return info, None
  prep = meta["preprocessing"]
  mean, std = pretrained.normalization(prep)
  channels, want = info.image_shape[-1], len(mean)
  if info.input_shape is not None or channels not in (1, want):
    raise ConfigError(f"config.init.checkpoint={i.checkpoint!r} expects {want}-channel images; "
                      f"{config.dataset.name!r} gives {info.input_shape or channels}-channel inputs")
  if config.dataset.image_size != prep["input_size"]:
    raise ConfigError(f"config.dataset.image_size={config.dataset.image_size} but the weights of "
                      f"config.init.checkpoint={i.checkpoint!r} expect {prep['input_size']} (its pretrained.json): "
                      f"set dataset.image_size={prep['input_size']}, or init.preprocessing=False to keep the data "
                      f"set's own normalisation and size")
  applied = {"from": str(i.checkpoint), "mean": mean.tolist(), "std": std.tolist(),
             "input_size": prep["input_size"], "transform_input": bool(prep.get("transform_input")),
             "grey_to_rgb": channels == 1 and want == 3}
  if applied["grey_to_rgb"]:
    log.warning("%s is grey and the weights of %s expect RGB: each image's channel is replicated 3 times",
                config.dataset.name, i.checkpoint)
  shape = (*info.image_shape[:2], want)
  return dataclasses.replace(info, image_shape=shape, mean=tuple(applied["mean"]), std=tuple(applied["std"])), applied


def apply_init(state, init_vars: Dict[str, Any], dont_load: Sequence[str], load_batch_stats: bool):
  """`state` with its params (and batch_stats) taken from `init_vars`, but for the leaves `dont_load` matches.
  Returns (state, number of leaves loaded)."""
  kinds = ("params", "batch_stats") if load_batch_stats else ("params",)
  want = {f"{k}/{p}": v for k in kinds for p, v in param_paths.flatten(getattr(state, k)).items()}
  have = {f"{k}/{p}": v for k in kinds for p, v in param_paths.flatten(init_vars.get(k, {})).items()}
  skip = lambda p: any(param_paths.matches(r, p) for r in dont_load)
  missing = sorted(p for p in want if p not in have and not skip(p))
  extra = sorted(p for p in have if p not in want and not skip(p))
  shape = sorted(f"{p} init {np.shape(have[p])} vs model {want[p].shape}" for p in want
                 if p in have and not skip(p) and np.shape(have[p]) != want[p].shape)
  if missing or extra or shape:
    raise ConfigError("config.init.checkpoint does not fit the model (add regexes to config.init.dont_load for "
                      f"the leaves to keep fresh): missing {missing[:10]}; unexpected {extra[:10]}; "
                      f"reshaped {shape[:10]}")
  loaded = {p for p in want if p in have and not skip(p)}

  def take(kind, tree):
    flat = param_paths.flatten(tree)
    new = {p: (np.asarray(have[f"{kind}/{p}"], v.dtype) if f"{kind}/{p}" in loaded else v) for p, v in flat.items()}
    return flax.serialization.from_state_dict(tree, flax.traverse_util.unflatten_dict(new, sep="/"))
  state = state.replace(**{k: take(k, getattr(state, k)) for k in kinds})
  return state, len(loaded)


def partition(params, frozen: str):
  """(trainable, frozen): two flat {'/'-joined path: array} dicts of `params`, split by the regex `frozen`."""
  return param_paths.partition(param_paths.flatten(params), frozen)


def merge(trainable, fixed):
  """The params tree of the two halves `partition` made."""
  return flax.traverse_util.unflatten_dict({**trainable, **fixed}, sep="/")


def frozen_labels(frozen: str):
  """A function params -> tree of 'frozen' / 'train' labels for optax.multi_transform."""
  return lambda params: param_paths.labels(params, [(frozen, "frozen")], "train")


def scale_by_regex(mults: Sequence[Tuple[str, float]]) -> optax.GradientTransformation:
  """Multiplies the update of each parameter whose '/'-joined path a regex selects by its multiplier (the first
  that selects it; param_paths.matches)."""
  rules = [(r, float(m)) for r, m in mults]

  def update(updates, state, params=None):
    del params
    return jax.tree.map(lambda u, m: u * m, updates, param_paths.labels(updates, rules, 1.0)), state
  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def wrap_optimizer(tx: optax.GradientTransformation, config) -> optax.GradientTransformation:
  """Adds `lr_mults` and `frozen` (see the module docstring) around the optimizer."""
  if config.lr_mults:
    tx = optax.chain(tx, scale_by_regex(config.lr_mults))
  if config.frozen:
    tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, frozen_labels(config.frozen))
  return tx
