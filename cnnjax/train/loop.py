"""The training loop: `run(config, workdir)` trains, evaluates, checkpoints and resumes.

Everything it needs comes from the config; it holds no global state. The same function runs on one CPU, on a
GPU host and on every process of a multi-host TPU slice (batches are global jax.Arrays over the 'data' mesh
axis; only process 0 writes metrics). Faults it handles (README, "Faults"): a kill at any moment (resume from
the last complete checkpoint, bit for bit), SIGTERM/SIGINT (checkpoint now, exit with EXIT_PREEMPTED),
non-finite losses or gradients (config.on_nonfinite), damaged checkpoints (fall back to an older one), and a
config that changed under a workdir (refuse unless allowed).
"""
import hashlib
import logging
import os
import signal
import sys
import time
from typing import Dict, Optional

import jax
import numpy as np

from cnnjax import checkpoint, data, metrics, models, parallel
from cnnjax import config as config_lib
from cnnjax.errors import ConfigError
from cnnjax.train import optim, state as state_lib, steps

log = logging.getLogger("cnnjax")

FINAL = "final_metrics.json"  # written once a run reaches its last step: {"step", "train": {...}, "eval": {...}}
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: stopped by a signal after saving a checkpoint; run the command again


class Preempted(Exception):
  """Raised after a SIGTERM/SIGINT once the checkpoint at `step` is saved and metrics are flushed."""

  def __init__(self, step: int, signum: int):
    super().__init__(f"stopped by signal {signal.Signals(signum).name} at step {step}; checkpoint saved. "
                     f"Run the same command again to resume.")
    self.step, self.signum = step, signum


class NonFiniteError(RuntimeError):
  """The loss or the gradients went NaN/Inf (config.on_nonfinite='stop', or too many skips in a row)."""


class _SignalFlag:
  """Records SIGTERM/SIGINT instead of dying, so the loop can save first. Restores the old handlers on exit."""

  def __init__(self):
    self.signum = None
    self._old = {}

  def __enter__(self):
    import threading
    # With several processes, JAX's preemption service owns SIGTERM (see _should_stop).
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      for s in (signal.SIGTERM, signal.SIGINT):
        self._old[s] = signal.signal(s, self._handle)
    return self

  def _handle(self, signum, frame):
    if self.signum is not None and signum == signal.SIGINT:  # a second Ctrl-C: stop at once
      raise KeyboardInterrupt
    self.signum = signum

  def __exit__(self, *exc):
    for s, h in self._old.items():
      signal.signal(s, h)


def _should_stop(sig: _SignalFlag, step: int) -> bool:
  """Whether to checkpoint and stop after `step`. One process: a SIGTERM/SIGINT arrived. Several: JAX's
  preemption sync point, at which every process agrees on the same step after any of them got SIGTERM."""
  if jax.process_count() == 1:
    return sig.signum is not None
  from jax.experimental import multihost_utils
  if multihost_utils.reached_preemption_sync_point(step):
    sig.signum = sig.signum or signal.SIGTERM
    return True
  return False


def _progress(total: int, initial: int, enabled: bool):
  from tqdm.auto import tqdm
  return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, smoothing=0.1,
              disable=(not enabled) or (not sys.stderr.isatty()), leave=True)


def fingerprint(tree) -> str:
  """A short hash of this process's copy of a pytree of arrays (equal copies have equal fingerprints)."""
  h = hashlib.sha256()
  for leaf in jax.tree.leaves(tree):
    h.update(np.asarray(jax.device_get(leaf.addressable_data(0) if hasattr(leaf, "addressable_data") else leaf)
                        ).tobytes())
  return h.hexdigest()[:16]


def evaluate(eval_step, state, eval_ds, sharding) -> Dict[str, float]:
  """Runs `eval_step` over every batch of `eval_ds` and returns mean loss, top-1 and top-5 accuracy."""
  sums = None
  for batch in eval_ds:
    batch = parallel.global_batch(batch, sharding)
    with jax.transfer_guard("disallow"):  # the step must not copy to or from the host (issue 9)
      out = eval_step(state, batch)
    sums = out if sums is None else jax.tree.map(lambda a, b: a + b, sums, out)
  return metrics.summarize([jax.device_get(sums)])


def _check_resume_config(config, workdir: str, allow_config_change: bool) -> None:
  saved = config_lib.load_json(workdir)
  if saved is None or not os.path.isdir(os.path.join(workdir, "checkpoints")):
    return
  diffs = config_lib.resume_differences(saved, config)
  if diffs and not allow_config_change:
    raise ConfigError(f"{workdir} holds a run with another config; resuming it would mix two experiments. "
                      f"Differences:\n  " + "\n  ".join(diffs) +
                      "\nUse a new --workdir, or pass --allow_config_change to resume anyway.")
  if diffs:
    log.warning("resuming with a changed config (allowed): %s", "; ".join(diffs))


def _check_model_input(model, input_shape, config) -> None:
  """Traces the model at the configured input size (no compute) so a too-small image fails before compiling."""
  try:
    jax.eval_shape(lambda: model.init({"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(0)},
                                      jax.numpy.zeros((1, *input_shape)), train=False))
  except (TypeError, ValueError, ZeroDivisionError) as e:
    raise ConfigError(f"config.dataset.image_size={config.dataset.image_size} does not fit model "
                      f"{config.model.name!r} (input {input_shape}): {str(e).splitlines()[0][:300]}. "
                      f"Use a larger image size.") from None


def run(config, workdir: str, *, stop_after_steps: Optional[int] = None,
        allow_config_change: bool = False) -> Dict[str, Dict[str, float]]:
  """Trains `config` in `workdir` (resuming from its latest checkpoint). Returns the last train/eval metrics.

  `stop_after_steps` ends the run early, with a checkpoint, once that step is reached, without changing the
  schedule (which depends only on the config): for time-boxed jobs and resume tests.
  """
  parallel.initialize(config)
  config_lib.validate(config)
  parallel.enable_compilation_cache(config.compilation_cache_dir)
  workdir = os.path.abspath(workdir)
  is_chief = jax.process_index() == 0
  _check_resume_config(config, workdir, allow_config_change)

  # Data.
  train_src, info = data.get_source(config.dataset, config.dataset.train_split)
  eval_src, _ = data.eval_source(config.dataset)  # dataset.eval_name may name another data set
  if config.dataset.num_classes not in (-1, info.num_classes):
    raise ConfigError(f"config.dataset.num_classes={config.dataset.num_classes} but {config.dataset.name} has "
                      f"{info.num_classes} classes (use -1 to take the data set's)")
  steps_per_epoch = len(train_src) // config.batch_size
  if steps_per_epoch < 1:
    raise ConfigError(f"config.batch_size={config.batch_size} is larger than the {len(train_src)} training "
                      f"examples of {config.dataset.name}")
  total_steps = config.num_train_steps if config.num_train_steps > 0 else config.num_epochs * steps_per_epoch
  every = lambda v: steps_per_epoch if v == -1 else v
  pk = dict(process_index=jax.process_index(), process_count=jax.process_count())
  make_train_iter = lambda: iter(data.train_dataset(config, train_src, info, **pk))
  eval_ds = data.eval_dataset(config, eval_src, info, **pk)

  # Model, optimizer, state.
  model = models.create(config.model.name, num_classes=info.num_classes, **config_lib.model_options(config))
  input_shape = (config.dataset.image_size, config.dataset.image_size, info.image_shape[-1])
  _check_model_input(model, input_shape, config)
  tx, schedule = optim.build(config, steps_per_epoch, total_steps)
  mesh = parallel.mesh()
  batch_sharding = parallel.batch_sharded(mesh)
  create = lambda rng: state_lib.create(rng, model, tx, input_shape)
  state_sharding = parallel.state_shardings(jax.eval_shape(create, jax.random.PRNGKey(0)), mesh,
                                            config.parallel.shard_params)
  state = jax.jit(create, out_shardings=state_sharding)(jax.random.PRNGKey(config.seed))
  log.info("model %s: %d parameters; %d steps (%d per epoch) on %d devices in %d processes", config.model.name,
           sum(x.size for x in jax.tree.leaves(state.params)), total_steps, steps_per_epoch, jax.device_count(),
           jax.process_count())

  if is_chief:
    os.makedirs(workdir, exist_ok=True)
    config_lib.save_json(config, workdir)
  ckpt = checkpoint.Manager(os.path.join(workdir, "checkpoints"), max_to_keep=config.keep_checkpoints)
  train_iter = make_train_iter()
  restored, start_step = ckpt.restore(state, train_iter)
  if restored is None:
    train_iter, start_step = make_train_iter(), 0  # a failed restore attempt may have moved the iterator
  else:
    state = restored
  writer = metrics.Writer(workdir, enabled=is_chief)
  writer.truncate(start_step)

  train_step = jax.jit(steps.make_train_step(model, tx, schedule, label_smoothing=config.label_smoothing,
                                             aux_loss_weight=config.aux_loss_weight,
                                             grad_accum_steps=config.grad_accum_steps),
                       in_shardings=(state_sharding, batch_sharding),
                       out_shardings=(state_sharding, parallel.replicated(mesh)), donate_argnums=0)
  eval_step = jax.jit(steps.make_eval_step(model), in_shardings=(state_sharding, batch_sharding),
                      out_shardings=parallel.replicated(mesh))

  last: Dict[str, Dict[str, float]] = {}
  pending = []          # device metrics of the steps since the last log line
  consecutive_bad = [0]
  end = total_steps if stop_after_steps is None else min(total_steps, stop_after_steps)
  bar = _progress(total_steps, start_step, config.progress_bar and is_chief)
  clock = {"t": time.perf_counter(), "n": 0}

  def flush_train_metrics(step):
    """Writes the pending steps' metrics as one train entry; enforces config.on_nonfinite."""
    nonlocal pending
    if not pending:
      return
    host = jax.device_get(pending)
    first = step - len(host) + 1
    pending = []
    for i, m in enumerate(host):
      bad = [q for q in ("loss", "grads") if bool(m[f"nonfinite_{q}"])]
      consecutive_bad[0] = consecutive_bad[0] + 1 if bad else 0
      if bad and (config.on_nonfinite == "stop" or consecutive_bad[0] >= config.max_consecutive_nonfinite):
        why = ("config.on_nonfinite='stop'" if config.on_nonfinite == "stop" else
               f"{consecutive_bad[0]} non-finite steps in a row (max_consecutive_nonfinite)")
        raise NonFiniteError(f"non-finite {' and '.join(bad)} at step {first + i} ({why}); that update was not "
                             f"applied. The latest checkpoint holds the last good state.")
      if bad:
        log.warning("step %d: non-finite %s; update skipped", first + i, " and ".join(bad))
    summary = metrics.summarize(host)
    now = time.perf_counter()
    summary["examples_per_sec"] = clock["n"] / max(now - clock["t"], 1e-9)
    summary["epoch"] = step / steps_per_epoch
    clock["t"], clock["n"] = now, 0
    writer.write(step, "train", summary)
    last["train"] = summary
    bar.set_postfix(loss=f"{summary['loss']:.4f}", top1=f"{summary['top1']:.3f}",
                    ex_s=f"{summary['examples_per_sec']:.0f}")
    if bar.disable:
      log.info("step %d/%d: loss %.4f top1 %.4f lr %.4g %.1f ex/s", step, total_steps, summary["loss"],
               summary["top1"], summary["learning_rate"], summary["examples_per_sec"])

  step = start_step
  try:
    with _SignalFlag() as sig:
      while step < end:
        batch = parallel.global_batch(next(train_iter), batch_sharding)
        t0 = time.perf_counter()
        with jax.transfer_guard("disallow"):  # no implicit host round trip in the step; metrics stay on device
          state, m = train_step(state, batch)
        if step == start_step:
          jax.block_until_ready(m)
          log.info("first step (compile + run) took %.1f s", time.perf_counter() - t0)
          clock["t"], clock["n"] = time.perf_counter(), 0
        pending.append(m)
        step += 1
        clock["n"] += config.batch_size
        bar.update(1)
        stopping = _should_stop(sig, step)
        if step % config.log_every_steps == 0 or step == end or stopping:
          flush_train_metrics(step)
        if step % every(config.eval_every_steps) == 0 or step == total_steps:
          flush_train_metrics(step)
          ev = evaluate(eval_step, state, eval_ds, batch_sharding)
          ev["epoch"] = step / steps_per_epoch
          writer.write(step, "eval", ev)
          last["eval"] = ev
          log.info("eval at step %d: loss %.4f top1 %.4f top5 %.4f (%d examples)", step, ev["loss"],
                   ev["top1"], ev["top5"], ev["count"])
          clock["t"], clock["n"] = time.perf_counter(), 0  # keep eval time out of the throughput
        if step % every(config.checkpoint_every_steps) == 0 or step == end or stopping:
          flush_train_metrics(step)  # raises before saving if this state's history went non-finite
          ckpt.save(step, state, train_iter)
        if stopping:
          ckpt.wait()
          writer.flush()
          raise Preempted(step, sig.signum)
  finally:
    if hasattr(train_iter, "close"):
      train_iter.close()  # ends Grain's worker processes cleanly
    bar.close()
    ckpt.wait()
    ckpt.close()
    writer.close()
  log.info("process %d: final parameters fingerprint %s", jax.process_index(), fingerprint(state.params))
  if is_chief and step == total_steps and step > start_step:
    metrics.write_json_atomic(os.path.join(workdir, FINAL), {"step": step, **last})
  if is_chief:
    print(f"Done: {step} steps. Results in {workdir}: metrics.jsonl, tensorboard/, checkpoints/, config.json")
    if "eval" in last:
      print(f"  eval: top1 {last['eval']['top1']:.4f}, top5 {last['eval']['top5']:.4f}, "
            f"loss {last['eval']['loss']:.4f} on {int(last['eval']['count'])} examples")
  return last
