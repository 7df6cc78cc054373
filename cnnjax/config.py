"""Config checks that run before anything compiles, and the fields a resumed run may change."""
import json
import re

import flax
import jax

from cnnjax.errors import ConfigError
from cnnjax.layers import IMPLS
from cnnjax.train.optim import OPTIMIZERS, SCHEDULES

DTYPES = ("float32", "bfloat16")


def _check(ok: bool, field: str, value, allowed: str) -> None:
  if not ok:
    raise ConfigError(f"config.{field}={value!r} is invalid: {allowed}")


def validate(config) -> None:
  """Raises ValueError naming the field, its value and what is allowed."""
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
  _check(c.parallel.shard_min_size >= 1, "parallel.shard_min_size", c.parallel.shard_min_size, ">= 1")
  _check(c.dataset.num_workers >= 0, "dataset.num_workers", c.dataset.num_workers, ">= 0")
  _check(c.dataset.image_size > 0, "dataset.image_size", c.dataset.image_size, "> 0")
  _check(isinstance(c.grad_accum_steps, int) and c.grad_accum_steps >= 1, "grad_accum_steps",
         c.grad_accum_steps, "an int >= 1")
  _check(c.batch_size % (c.grad_accum_steps * jax.device_count()) == 0, "batch_size", c.batch_size,
         f"a multiple of grad_accum_steps x device count = {c.grad_accum_steps * jax.device_count()}")
  _check(c.on_nonfinite in ("stop", "skip"), "on_nonfinite", c.on_nonfinite, "'stop' or 'skip'")
  _check(c.max_consecutive_nonfinite >= 1, "max_consecutive_nonfinite", c.max_consecutive_nonfinite, ">= 1")
  for field, pattern in [("frozen", c.frozen), *[("init.dont_load", r) for r in c.init.dont_load],
                         *[("lr_mults", r) for r, _ in c.lr_mults]]:
    try:
      re.compile(pattern)
    except (re.error, TypeError) as e:
      raise ConfigError(f"config.{field}: {pattern!r} is not a regular expression ({e})") from None
  _check(all(float(m) >= 0 for _, m in c.lr_mults), "lr_mults", c.lr_mults, "((regex, multiplier >= 0), ...)")
  _check(c.early_stopping.metric in ("top1", "loss"), "early_stopping.metric", c.early_stopping.metric,
         "'top1' or 'loss'")
  from cnnjax import models
  models.registry.check(c.model.name, [k for k, v in c.model.items() if k != "name" and v is not None])


def model_options(config) -> dict:
  """The model's options: every field of config.model but its name and those left None (the named model's
  own value), plus the compute dtype."""
  opts = {k: v for k, v in config.model.items() if k != "name" and v is not None}
  if "dtype" not in opts:
    import jax.numpy as jnp
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
               "max_consecutive_nonfinite", "dataset.data_dir", "dataset.num_workers", "dataset.num_threads",
               "dataset.prefetch", "distributed.", "parallel.")


def _flatten(d) -> dict:
  return flax.traverse_util.flatten_dict(d, sep=".")


def resume_differences(saved: dict, config) -> list:
  """Fields that differ between a workdir's saved config.json and `config`, other than RESUME_SAFE ones."""
  from configs import default  # a field added since the workdir was written counts as its default there
  now = _flatten(json.loads(config.to_json_best_effort()))
  old = _flatten(saved)
  defaults = _flatten(json.loads(default.get_config().to_json_best_effort()))
  diffs = []
  for key in sorted(set(now) | set(old)):
    if any(key == s or (s.endswith(".") and key.startswith(s)) for s in RESUME_SAFE):
      continue
    if key not in old and key in defaults and now[key] == defaults[key]:
      continue
    if now.get(key, "<absent>") != old.get(key, "<absent>"):
      diffs.append(f"{key}: {old.get(key, '<absent>')!r} in the workdir, {now.get(key, '<absent>')!r} now")
  return diffs
