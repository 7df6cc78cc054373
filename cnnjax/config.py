"""Config checks that run before anything compiles, and the fields a resumed run may change."""
import json
import logging
import re
import warnings
from typing import List, Optional

import flax
import jax
import jax.numpy as jnp

from cnnjax import data
from cnnjax import defaults as defaults_lib
from cnnjax import models
from cnnjax.errors import ConfigError
from cnnjax.layers import IMPLS
from cnnjax.layers.autotune import MODES as AUTOTUNE_MODES
from cnnjax.train import probe
from cnnjax.train.optim import OPTIMIZERS, SCHEDULES

log = logging.getLogger("cnnjax")

DTYPES = ("float32", "bfloat16")


def _check(ok: bool, field: str, value, allowed: str) -> None:
  if not ok:
    raise ConfigError(f"config.{field}={value!r} is invalid: {allowed}")


# Blocks renamed: old name -> new name (same fields). The old block stays in the defaults with unset values, so
# config files and --config.<old>.x=v overrides still work; `rename_deprecated` moves what they set.
RENAMED = {"early_stopping": "model_selection"}


def rename_deprecated(config) -> None:
  """Moves the values set under a renamed block (RENAMED) to its new name, with a DeprecationWarning and a log
  warning saying to rename it, and removes the old block, so the run and its config.json see only the new name.
  Changes `config` in place (unlocking it for that)."""
  defaults = defaults_lib.get_config()
  for old, new in RENAMED.items():
    if old not in config:
      continue
    given = {k: v for k, v in config[old].items() if v is not None}
    for k, v in given.items():
      if new in config and config[new][k] not in (v, defaults[new][k]):
        raise ConfigError(f"config.{old}.{k}={v!r} and config.{new}.{k}={config[new][k]!r} disagree: "
                          f"{old} is the old name of {new}; set only config.{new}.{k}")
    with config.unlocked():
      if new not in config:
        config[new] = defaults[new]
      for k, v in given.items():
        config[new][k] = v
      del config[old]
    if given:
      message = (f"config.{old} is deprecated: rename it to config.{new} (the same fields); "
                 f"{', '.join(f'{old}.{k}={v!r}' for k, v in given.items())} taken as config.{new}")
      warnings.warn(message, DeprecationWarning, stacklevel=2)
      log.warning("%s", message)


def validate(config) -> None:
  """Raises ConfigError naming the field, its value and what is allowed: every check of the config that needs no
  data, so a bad config fails before anything is read or compiled (checks that need the data or the parameters
  run where those are first known, also before compiling). First renames deprecated blocks in place
  (`rename_deprecated`)."""
  rename_deprecated(config)
  c = config
  _check(isinstance(c.seed, int), "seed", c.seed, "an int")
  for f in ("batch_size", "eval_batch_size"):
    v = c[f]
    _check(isinstance(v, int) and v > 0, f, v, "a positive int")
    n = jax.device_count()
    _check(v % n == 0, f, v, f"a multiple of the device count {n}")
  _check(c.num_epochs > 0 or c.num_train_steps > 0, "num_epochs", c.num_epochs,
         "> 0 (or set num_train_steps > 0)")
  _check(c.learning_rate > 0, "learning_rate", c.learning_rate, "> 0")
  _check(c.optimizer in OPTIMIZERS, "optimizer", c.optimizer, f"one of {OPTIMIZERS}")
  _check(c.lr_schedule in SCHEDULES, "lr_schedule", c.lr_schedule, f"one of {SCHEDULES}")
  _check(c.warmup_epochs >= 0, "warmup_epochs", c.warmup_epochs, ">= 0")
  _check(c.weight_decay >= 0, "weight_decay", c.weight_decay, ">= 0")
  _check(0 <= c.label_smoothing < 1, "label_smoothing", c.label_smoothing, "in [0, 1)")
  _check(c.dtype in DTYPES, "dtype", c.dtype, f"one of {DTYPES}")
  _check(c.log_every_steps > 0, "log_every_steps", c.log_every_steps, "> 0")
  for f in ("eval_every_steps", "checkpoint_every_steps"):
    _check(c[f] == -1 or c[f] > 0, f, c[f], "> 0, or -1 for once per epoch")
  _check(c.keep_checkpoints >= 1, "keep_checkpoints", c.keep_checkpoints, ">= 1")
  _check(c.model.conv_impl in IMPLS, "model.conv_impl", c.model.conv_impl, f"one of {IMPLS}")
  _check(c.model.conv_autotune in AUTOTUNE_MODES, "model.conv_autotune", c.model.conv_autotune,
         f"one of {AUTOTUNE_MODES}")
  _check(c.parallel.shard_min_size >= 1, "parallel.shard_min_size", c.parallel.shard_min_size, ">= 1")
  _check(c.dataset.num_workers >= 0, "dataset.num_workers", c.dataset.num_workers, ">= 0")
  _check(c.dataset.image_size > 0, "dataset.image_size", c.dataset.image_size, "> 0")
  _check(isinstance(c.grad_accum_steps, int) and c.grad_accum_steps >= 1, "grad_accum_steps",
         c.grad_accum_steps, "an int >= 1")
  _check(c.batch_size % (c.grad_accum_steps * jax.device_count()) == 0, "batch_size", c.batch_size,
         f"a multiple of grad_accum_steps x device count = {c.grad_accum_steps * jax.device_count()}")
  _check(c.on_nonfinite in ("stop", "skip"), "on_nonfinite", c.on_nonfinite, "'stop' or 'skip'")
  _check(c.max_consecutive_nonfinite >= 1, "max_consecutive_nonfinite", c.max_consecutive_nonfinite, ">= 1")
  for field, pattern in [("frozen", c.frozen), ("max_norm_pattern", c.max_norm_pattern),
                         *[("init.dont_load", r) for r in c.init.dont_load],
                         *[("lr_mults", r) for r, _ in c.lr_mults]]:
    try:
      re.compile(pattern)
    except (re.error, TypeError) as e:
      raise ConfigError(f"config.{field}: {pattern!r} is not a regular expression ({e})") from None
  _check(c.max_norm >= 0, "max_norm", c.max_norm, ">= 0 (0: no constraint)")
  _check(all(float(m) >= 0 for _, m in c.lr_mults), "lr_mults", c.lr_mults, "((regex, multiplier >= 0), ...)")
  _check(0 <= c.ema.decay < 1, "ema.decay", c.ema.decay, "in [0, 1) (0: no moving average)")
  _check(isinstance(c.ema.start_step, int) and c.ema.start_step >= 0, "ema.start_step", c.ema.start_step,
         "an int >= 0")
  _check(not (c.init.ema and not c.init.checkpoint), "init.ema", c.init.ema, "False unless init.checkpoint is set")
  for f in ("mixup.alpha", "cutmix.alpha"):
    v = c.mixup.alpha if f == "mixup.alpha" else c.cutmix.alpha
    _check(v >= 0, f, v, ">= 0 (0: off)")
  for f in ("mixup.prob", "mixup.switch_prob"):
    v = c.mixup[f.split(".")[1]]
    _check(0 <= v <= 1, f, v, "in [0, 1]")
  _check(isinstance(c.dataset.trivial_augment, bool), "dataset.trivial_augment", c.dataset.trivial_augment,
         "True or False")
  _check(0 <= c.dataset.random_erasing <= 1, "dataset.random_erasing", c.dataset.random_erasing,
         "a probability in [0, 1] (0: off)")
  if c.mixup.alpha > 0 or c.cutmix.alpha > 0:
    _check(not data.is_text(c.dataset.name), "mixup.alpha" if c.mixup.alpha > 0 else "cutmix.alpha",
           c.mixup.alpha or c.cutmix.alpha, f"0 for a text data set ({c.dataset.name!r}: token ids do not mix)")
  _check(c.model_selection.metric in ("top1", "loss"), "model_selection.metric", c.model_selection.metric,
         "'top1' or 'loss'")
  if c.linear_probe.enabled:
    probe.check(c.linear_probe)
  models.registry.check_values(c.model.name, model_options(c, dtype=False))


# Fields of config.model that are not options of the model itself.
NOT_MODEL_OPTIONS = ("name", "conv_autotune")


def model_options(config, dtype: bool = True) -> dict:
  """The model's options: every field of config.model but NOT_MODEL_OPTIONS and those left None (the named
  model's own value), plus the compute dtype (if `dtype`)."""
  opts = {k: v for k, v in config.model.items() if k not in NOT_MODEL_OPTIONS and v is not None}
  if dtype and "dtype" not in opts:
    opts["dtype"] = jnp.dtype(config.dtype)
  return opts


def flat_keys(config, prefix: str = ""):
  """All dotted field paths of a ConfigDict ('model.name', ...)."""
  keys = []
  for k, v in config.items():
    path = prefix + k
    keys.append(path)
    if hasattr(v, "items") and not isinstance(v, dict):
      keys.extend(flat_keys(v, path + "."))
  return keys


def unknown_overrides(config, argv):
  """Messages for each `--config.a.b=v` in argv whose path is not a field of `config`, with the closest
  valid fields."""
  import difflib
  keys = flat_keys(config)
  leaves = [k for k in keys if not any(o.startswith(k + ".") for o in keys)]
  out = []
  for arg in argv:
    if arg.startswith("--config."):
      path = arg[len("--config."):].split("=")[0]
      if path not in keys:
        close = difflib.get_close_matches(path, leaves, 3, 0.5)
        out.append(f"--config.{path}: the config has no field {path!r}. Closest valid fields: "
                   f"{', '.join(close) if close else '(none close)'}.")
  return out


def load_file(spec: str):
  """Loads `path.py[:preset]` as config_flags does, without overrides (for error messages and tools)."""
  import importlib.util
  path, _, preset = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("_cnnjax_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(preset) if preset else module.get_config()


# Fields a resumed run may change: cadences, durations, I/O and runtime placement. Anything else (model,
# data, optimizer, seed, batch size, ...) would silently mix two experiments in one workdir.
RESUME_SAFE = ("num_epochs", "num_train_steps", "log_every_steps", "eval_every_steps", "checkpoint_every_steps",
               "keep_checkpoints", "progress_bar", "compilation_cache_dir", "eval_batch_size", "on_nonfinite",
               "max_consecutive_nonfinite", "model.conv_autotune", "dataset.data_dir", "dataset.num_workers",
               "dataset.num_threads", "dataset.prefetch", "distributed.", "parallel.")


def _flatten(d) -> dict:
  return flax.traverse_util.flatten_dict(d, sep=".")


def renamed_json(d: dict) -> dict:
  """A config as JSON with renamed blocks (RENAMED) under their new names; unset (None) old values dropped."""
  d = dict(d)
  for old, new in RENAMED.items():
    if isinstance(d.get(old), dict):
      d[new] = {**d.get(new, {}), **{k: v for k, v in d.pop(old).items() if v is not None}}
  return d


def resume_differences(saved: dict, config) -> list:
  """Fields that differ between a workdir's saved config.json and `config`, other than RESUME_SAFE ones. A
  workdir written before a block was renamed (RENAMED) is read with the new name."""
  now = _flatten(renamed_json(json.loads(config.to_json_best_effort())))
  old = _flatten(renamed_json(saved))
  # A field added since the workdir was written counts as its default there.
  defaults = _flatten(renamed_json(json.loads(defaults_lib.get_config().to_json_best_effort())))
  diffs = []
  for key in sorted(set(now) | set(old)):
    if any(key == s or (s.endswith(".") and key.startswith(s)) for s in RESUME_SAFE):
      continue
    if key not in old and key in defaults and now[key] == defaults[key]:
      continue
    if now.get(key, "<absent>") != old.get(key, "<absent>"):
      diffs.append(f"{key}: {old.get(key, '<absent>')!r} in the workdir, {now.get(key, '<absent>')!r} now")
  return diffs


def check_resume_config(saved: Optional[dict], config, workdir, allow_config_change: bool) -> List[str]:
  """The differences between the workdir's config.json and `config` that are not safe on resume (see
  RESUME_SAFE); raises ConfigError if there are some and they are not allowed."""
  if saved is None:
    return []
  diffs = resume_differences(saved, config)
  if diffs and not allow_config_change:
    raise ConfigError(f"{workdir} holds a run with another config; resuming it would mix two experiments. "
                      f"Differences:\n  " + "\n  ".join(diffs) +
                      "\nUse a new --workdir, pass --allow_config_change to resume anyway, or --restart to "
                      "start again (the previous attempt is moved aside, kept).")
  return diffs
