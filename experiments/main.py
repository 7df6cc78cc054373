"""Launch a training run from a config file.

  python -m experiments.main --config configs/resnet.py[:preset] --workdir runs/r1 [--config.a.b=value ...]

The same command on a CPU, a GPU host or every host of a TPU slice. Running it again with the same workdir
resumes from the latest checkpoint. Writes into the workdir: config.json, metrics.jsonl, tensorboard/,
checkpoints/<step>/, conv_impls.json, final_metrics.json at the end (and vocab.json, preprocessing.json,
class_names.json where they apply); `--mode=eval` writes only eval/<split>_<step>.json. docs/guide/running.md.
"""
import logging
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file, optionally `:preset`.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the config copy.")
_ALLOW_CHANGE = flags.DEFINE_bool("allow_config_change", False,
                                  "Resume a workdir even though the config's model, data or optimizer changed.")
_RESTART = flags.DEFINE_bool("restart", False,
                             "Start again from step 0 in a workdir that holds a run: the previous attempt's files "
                             "are moved to <workdir>/previous/<n>/ (kept).")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval"],
                          "train: train (or resume) the run. eval: evaluate a checkpoint of the workdir once, "
                          "writing <workdir>/eval/<split>_<step>.json; trains nothing.")
_STEP = flags.DEFINE_integer("step", None, "--mode=eval: the checkpoint step (default: the newest).")
_SPLIT = flags.DEFINE_string("split", None, "--mode=eval: the split (default: config.dataset.eval_split).")
_EMA = flags.DEFINE_bool("ema", False, "--mode=eval: evaluate the moving average of the weights (a run with "
                         "config.ema.decay > 0) instead of the raw weights; writes <split>_ema_<step>.json.")
flags.mark_flags_as_required(["config", "workdir"])

EXIT_BUSY = 4  # another process holds the workdir


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from cnnjax.layers import cpu_fast
  cpu_fast.set_xla_flags()  # the project's CPU XLA flags, before JAX starts a backend
  from cnnjax import errors
  from cnnjax.train import loop  # imports jax after absl has parsed flags
  absl_logging.set_verbosity(absl_logging.WARNING)  # Orbax and Grain log every save at INFO
  logging.getLogger("cnnjax").setLevel(logging.INFO)
  try:
    if _MODE.value == "eval":
      ev = loop.evaluate_checkpoint(_CONFIG.value, _WORKDIR.value, step=_STEP.value, split=_SPLIT.value,
                                    ema=_EMA.value)
      print(f"eval{' (EMA weights)' if _EMA.value else ''} of step {ev['step']}: top1 {ev['top1']:.4f}, "
            f"top5 {ev['top5']:.4f}, loss {ev['loss']:.4f} "
            f"on {int(ev['count'])} examples")
      return
    loop.run(_CONFIG.value, _WORKDIR.value, allow_config_change=_ALLOW_CHANGE.value, restart=_RESTART.value)
  except errors.ConfigError as e:  # a bad value, name or --workdir: one message, status 2 like other bad arguments
    sys.stderr.write(f"FATAL: {e}\n")
    sys.exit(2)
  except errors.WorkdirBusyError as e:
    sys.stderr.write(f"FATAL: {e}\n")
    sys.exit(EXIT_BUSY)
  except (errors.RestoreError, errors.NonFiniteError) as e:
    sys.stderr.write(f"FATAL: {e}\n")
    sys.exit(1)
  except errors.Preempted as e:
    sys.stderr.write(f"{e}\n")
    sys.exit(loop.EXIT_PREEMPTED)


def parse_flags(argv):
  """absl's parser, but a misspelt `--config.key` ends with the key and the closest valid ones, and a bad config
  file or preset with the config's own error, no traceback."""
  try:
    rest = flags.FLAGS(argv)
    if _CONFIG.value is not None:
      _CONFIG.value.get("seed")  # a config file that failed to load raises here, not at parse time
    return rest
  except (flags.IllegalFlagValueError, OSError) as e:
    # ml_collections embeds the config file's traceback in the message: keep its final error line.
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    where = "--config" if isinstance(e, OSError) or "config file" in str(e) else "flags"
    sys.stderr.write(f"FATAL: bad {where}: {lines[-1]}\n")
    sys.exit(2)
  except (AttributeError, KeyError, TypeError) as e:
    from cnnjax import config as config_lib
    spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if spec is None and "--config" in argv:
      spec = argv[argv.index("--config") + 1]
    problems = config_lib.unknown_overrides(config_lib.load_file(spec), argv) if spec else []
    sys.stderr.write("FATAL: " + ("\n".join(problems) or f"bad --config override: {e}") + "\n")
    sys.exit(2)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
