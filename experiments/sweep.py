"""Run a grid of experiments defined in a config's `sweep` field, each as a normal run in its own workdir.

  python -m experiments.sweep --config configs/ablation.py --workdir runs/ablation [--workers 2]
                              [--shard i/n] [--seeds 0,1,2] [--dry-run] [--config.field=value ...]

`sweep` is a tuple of axes; an axis is (field, values) or ((field, field, ...), (value_tuple, ...)) for fields
that change together. Each run is `python -m experiments.main` with that run's --config.field=value overrides
(plus the ones given here) in `<workdir>/<field=value,...>/`, its output in `<workdir>/<field=value,...>.log`.
Re-running skips finished runs (final_metrics.json) and resumes unfinished ones from their checkpoints; a
finished run whose num_epochs or num_train_steps (the sweep's or the command line's) changed since is run again,
which extends it. On several machines, give each `--shard i/n`.

Seeds are an axis like any other: ("seed", (0, 1, 2)) in the config's sweep, or `--seeds 0,1,2` to add that axis
(last, so each setting's seeds run one after another) to a sweep that has none, or to a config without a sweep.
`python -m experiments.plot` then aggregates the runs that differ only in their seed (mean, sd, 95% interval, n;
curves as mean with a band).
"""
import itertools
import subprocess
import sys
import tempfile
import time

from absl import app, flags
from ml_collections import config_flags

from cnnjax import workdir as workdir_lib
from cnnjax.layers import cpu_fast

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file with a `sweep` field.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Parent directory of the runs' workdirs.")
_WORKERS = flags.DEFINE_integer("workers", 1, "Runs trained at the same time (each a process).")
_SHARD = flags.DEFINE_string("shard", "0/1", "i/n: run only every n-th run, starting at the i-th.")
_DRY = flags.DEFINE_bool("dry_run", False, "List the runs and their status; train nothing.")
_SEEDS = flags.DEFINE_list("seeds", [], "Seeds to add as the sweep's last axis (config.seed), e.g. 0,1,2.")
flags.mark_flags_as_required(["config", "workdir"])


def grid(sweep):
  """[(name, {field: value})] for every combination of the sweep's axes, in a fixed order."""
  axes = []
  for fields, values in sweep:
    if isinstance(fields, str):
      fields, values = (fields,), tuple((v,) for v in values)
    axes.append([dict(zip(fields, v)) for v in values])
  runs = []
  for combo in itertools.product(*axes):
    settings = {k: v for d in combo for k, v in d.items()}
    name = ",".join(f"{workdir_lib.field_label(k, settings)}={str(v).replace('/', '-')}" for k, v in settings.items())
    runs.append((name, settings))
  return runs


LENGTH_FIELDS = ("num_epochs", "num_train_steps")


def status(workdir, length: dict) -> str:
  """"done", "changed" (finished, but `length`, the run's num_epochs/num_train_steps, differs), "partial"
  or "new"."""
  workdir = workdir_lib.path(workdir)
  if (workdir / workdir_lib.FINAL).exists():
    saved = workdir_lib.read_json(workdir / workdir_lib.CONFIG) or {}
    return "done" if all(saved.get(k) == v for k, v in length.items()) else "changed"
  if (workdir / "checkpoints").is_dir():
    return "partial"
  return "new"


def with_seeds(sweep, seeds):
  """The sweep with a last axis ('seed', seeds); refused when an axis already sets the seed."""
  sweep = tuple(sweep)
  if not seeds:
    return sweep
  if any("seed" in ((f,) if isinstance(f, str) else tuple(f)) for f, _ in sweep):
    raise app.UsageError("--seeds: the config's sweep already has a seed axis")
  return sweep + (("seed", tuple(int(s) for s in seeds)),)


def command(config_spec, workdir, settings, extra):
  return [sys.executable, "-m", "experiments.main", "--config", config_spec, "--workdir", str(workdir),
          *[f"--config.{k}={v}" for k, v in settings.items()], *extra]


def main(argv):
  del argv
  cpu_fast.set_xla_flags()  # the project's CPU XLA flags, inherited by the runs' processes
  config = _CONFIG.value
  if "sweep" not in config and not _SEEDS.value:
    raise app.UsageError("the config has no `sweep` field (a tuple of (field, values) axes); --seeds alone makes one")
  i, n = (int(x) for x in _SHARD.value.split("/"))
  if not 0 <= i < n:
    raise app.UsageError(f"--shard={_SHARD.value}: need 0 <= i < n")
  runs = grid(with_seeds(config.get("sweep", ()), _SEEDS.value))[i::n]
  spec = config_flags.get_config_filename(flags.FLAGS["config"])
  extra = [a for a in sys.argv[1:] if a.startswith("--config.")]
  todo = []
  parent = workdir_lib.path(_WORKDIR.value)
  for name, settings in runs:
    wd = parent / name
    st = status(wd, {k: settings.get(k, config[k]) for k in LENGTH_FIELDS})
    print(f"{st:8s} {wd}")
    if st != "done":
      todo.append((name, command(spec, wd, settings, extra)))
  if _DRY.value or not todo:
    print(f"{len(todo)} of {len(runs)} runs to train" + (" (dry run)" if _DRY.value else ""))
    return
  parent.mkdir(parents=True, exist_ok=True)
  # A run's output goes to <name>.log beside its workdir; for a bucket, to a local file copied up at the end.
  logs = parent if not workdir_lib.is_url(parent) else workdir_lib.path(tempfile.mkdtemp(prefix="sweep-logs-"))
  running, failed = [], []
  while todo or running:
    while todo and len(running) < _WORKERS.value:
      name, cmd = todo.pop(0)
      log = open(logs / f"{name}.log", "a")
      print(f"start    {name}", flush=True)
      running.append((name, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log, time.time()))
    time.sleep(1)
    for item in list(running):
      name, proc, log, t0 = item
      if proc.poll() is not None:
        running.remove(item)
        log.close()
        if logs != parent:
          (parent / f"{name}.log").write_bytes((logs / f"{name}.log").read_bytes())
        print(f"{'finished' if proc.returncode == 0 else f'FAILED({proc.returncode})'} {name} "
              f"({time.time() - t0:.0f} s)", flush=True)
        if proc.returncode != 0:
          failed.append(name)
  if failed:
    print(f"{len(failed)} runs failed (see their .log files): {failed}")
    sys.exit(1)


if __name__ == "__main__":
  sys.argv = ["--dry_run" if a == "--dry-run" else a for a in sys.argv]  # the spelling the docs use
  app.run(main)
