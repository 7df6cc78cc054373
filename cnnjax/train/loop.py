"""The training loop: `run(config, workdir)` trains, evaluates, checkpoints and resumes.

Everything it needs comes from the config; it holds no global state. The same function runs on one CPU, on a
GPU host and on every process of a multi-host TPU slice (batches are global jax.Arrays over the 'data' mesh
axis; only process 0 writes to the workdir, which may be a bucket URL). `setup` builds one `Run` (lock, data,
model, state restored or initialised, compiled steps, writers); `run` is the loop; the periodic actions
(`TrainLog`, `evaluate`, checkpointing, preemption) are small pieces of their own. Faults it handles
(docs/guide/faults.md): kills, SIGTERM/SIGINT, non-finite steps, damaged checkpoints, a second launch on the same
workdir, a config changed under a workdir.
"""
import dataclasses
import hashlib
import json
import logging
import signal
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax import build, checkpoint, data, layers, metrics, parallel
from cnnjax.data import text
from cnnjax import config as config_lib
from cnnjax import workdir as workdir_lib
from cnnjax.errors import ConfigError, NonFiniteError, Preempted
from cnnjax.layers import autotune
from cnnjax.train import probe, state as state_lib, transfer

log = logging.getLogger("cnnjax")

FINAL = workdir_lib.FINAL  # written once a run reaches its last step: {"step", "train": {...}, "eval": {...}}
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: stopped by a signal after saving a checkpoint; run the command again
# The input-bound warning: input_wait above INPUT_WAIT_WARN in INPUT_WAIT_PATIENCE log intervals in a row. At 0.2
# a fifth of the wall time is lost to input, more than the usual gain of a faster kernel, and far above what a
# pipeline that keeps up shows (about 0.001 in tests/test_input_wait.py: taking a ready batch); several in a row so
# that one slow batch (a cold page cache, an evaluation's aftermath) does not warn. Repeated every
# INPUT_WAIT_REPEAT intervals while it lasts, so a long run's log is not one warning per line.
INPUT_WAIT_WARN, INPUT_WAIT_PATIENCE, INPUT_WAIT_REPEAT = 0.2, 3, 50


class _SignalFlag:
  """Records SIGTERM/SIGINT instead of dying, so the loop can save first. With several processes JAX's
  preemption service owns SIGTERM, and a Ctrl-C is turned into a SIGTERM to this process so that every process
  agrees on the step to save at (see `_should_stop`). Restores the old handlers on exit."""

  def __init__(self):
    self.signum = None
    self._old = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      own = (signal.SIGTERM, signal.SIGINT) if jax.process_count() == 1 else (signal.SIGINT,)
      for s in own:
        self._old[s] = signal.signal(s, self._handle)
    return self

  def _handle(self, signum, frame):
    if self.signum is not None and signum == signal.SIGINT:  # a second Ctrl-C: stop at once
      raise KeyboardInterrupt
    self.signum = signum
    if jax.process_count() > 1:
      import os
      os.kill(os.getpid(), signal.SIGTERM)  # to JAX's preemption notifier, which tells the other processes

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


def fingerprint(tree) -> str:
  """A short hash of this process's copy of a pytree of arrays (equal copies have equal fingerprints)."""
  h = hashlib.sha256()
  for leaf in jax.tree.leaves(tree):
    h.update(np.asarray(jax.device_get(leaf.addressable_data(0) if hasattr(leaf, "addressable_data") else leaf)
                        ).tobytes())
  return h.hexdigest()[:16]


def step_network(exp: build.Experiment, state, batch):
  """(make_fn, args) for autotune.check_network that time the run's own train step: make_fn() compiles the step
  under whatever 'auto' resolves to at that moment and returns a call of it on the run's first batch and on a
  copy of `state` of its own (the step donates its state). The network's gradient alone is not a faithful proxy:
  on VGG-16 (2-core AMD Zen 4) it ran 0.85-0.98x of lax's time under a plan whose train step took 1.10-1.43x."""
  def make_fn():
    compiled = exp.train_step().lower(state, batch).compile()
    box = [jax.tree.map(jnp.copy, state)]

    def run():
      box[0], metrics = compiled(box[0], batch)
      return metrics
    return run
  return make_fn, ()


def conv_plan(model, input_shape, config, info, network: Optional[Callable[[], tuple]] = None) -> Dict[str, Any]:
  """The convolution implementation each layer resolves to, with the backend, XLA flags and, under 'auto', the
  machine key and where the plan came from (for conv_impls.json). Under conv_impl='auto' on CPU the model is
  traced at the training step's (micro)batch: the autotuner decides the convolutions it sees (measuring those it
  has not, with model.conv_autotune='measure'), then keeps that plan only if the whole network runs faster under
  it than under plain lax (autotune.check_network, timing `network`: the run's train step, `step_network`, or by
  default the network's gradient); the plan is that of a last trace. Called with the workdir held, so a second
  launch on a busy workdir measures nothing."""
  with layers.record_conv_impls() as plan:
    build.trace(model, input_shape, info)
  if jax.default_backend() == "cpu" and any(r.requested == "auto" for r in plan):
    batch = config.batch_size // config.grad_accum_steps
    with layers.record_conv_impls() as plan, autotune.collecting() as specs:
      build.trace(model, input_shape, info, batch)
    changed = autotune.decide(specs)   # something was measured or agreed on: trace with the decisions
    network = network or (lambda: build.network_grad(model, input_shape, info, batch))
    if not autotune.check_network(specs, network) or changed:
      with layers.record_conv_impls() as plan:
        build.trace(model, input_shape, info, batch)
  return layers.conv_impls_record(plan)


def evaluate(eval_step, state, eval_ds, sharding) -> Dict[str, float]:
  """Runs `eval_step` over every batch of `eval_ds` and returns mean loss, top-1 and top-5 accuracy."""
  sums = None
  for batch in eval_ds:
    batch = parallel.global_batch(batch, sharding)
    with jax.transfer_guard("disallow"):  # the step must not copy to or from the host
      out = eval_step(state, batch)
    sums = out if sums is None else jax.tree.map(lambda a, b: a + b, sums, out)
  return metrics.summarize([jax.device_get(sums)])


@dataclasses.dataclass
class Run:
  """Everything one training run needs, built by `setup`."""
  config: Any
  workdir: Any                      # epath.Path
  is_chief: bool
  lock: Optional[workdir_lib.Lock]  # held by process 0
  steps_per_epoch: int
  total_steps: int
  start_step: int
  state: Any
  train_step: Callable
  eval_step: Callable
  eval_ema_step: Optional[Callable]  # the moving average's, where config.ema.decay > 0 (logged as 'eval_ema')
  make_train_iter: Callable[[int], Any]  # start step -> iterator of local batches
  eval_ds: Any
  dev_ds: Any                       # config.model_selection.split's batches, or None
  batch_sharding: Any
  ckpt: checkpoint.Manager
  writer: workdir_lib.MetricsWriter

  def every(self, v: int) -> int:
    return self.steps_per_epoch if v == -1 else v

  def close(self) -> None:
    self.ckpt.wait()
    self.ckpt.close()
    self.writer.close()
    if self.lock is not None:
      self.lock.release()


def _take_workdir(config, workdir, *, restart: bool, allow_config_change: bool, is_chief: bool):
  """Locks the workdir (process 0), moves a previous attempt aside on `restart`, and checks that a resumed
  run has the same config. Returns the lock."""
  lock = None
  if is_chief:
    lock = workdir_lib.Lock(workdir).acquire()
    if lock.previous:
      log.warning("took over the lock of %s, left by pid %s on %s, which is no longer running", workdir,
                  lock.previous.get("pid"), lock.previous.get("host"))
  try:
    if restart and is_chief:
      moved = workdir_lib.move_aside(workdir)
      if moved:
        log.warning("--restart: moved the previous attempt to %s (kept)", moved)
    if restart and jax.process_count() > 1:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices("cnnjax restart")
    saved = workdir_lib.read_json(workdir / workdir_lib.CONFIG)
    diffs = config_lib.check_resume_config(saved, config, workdir, allow_config_change)
    if diffs:
      log.warning("resuming with a changed config (allowed): %s", "; ".join(diffs))
  except BaseException:
    if lock is not None:
      lock.release()
    raise
  return lock


def _restore_or_init(exp: build.Experiment, workdir, ckpt, fit_probe=None):
  """The run's own newest restorable checkpoint, else a fresh state (with `init.checkpoint`, then `fit_probe`,
  a function of the state fitting the linear probe, whose result is saved at step 0 so it is done once). A
  workdir whose checkpoints all fail to restore never starts again from step 0 silently."""
  config = exp.config
  restored, start_step = exp.restore(ckpt)
  if restored is not None:
    return restored, start_step
  if ckpt.quarantined:
    raise ConfigError(f"no checkpoint in {workdir} could be restored; the damaged ones were moved aside "
                      f"({', '.join(ckpt.quarantined)}). Pass --restart to start again from step 0 (the "
                      f"previous attempt is moved to previous/, kept).")
  state = exp.init(config.seed)
  if config.init.checkpoint:  # applied once: a resumed run restored its own state above
    i = config.init
    state, n = transfer.apply_init(state, transfer.load_init(i.checkpoint, i.step, ema=i.ema), i.dont_load,
                                   i.load_batch_stats)
    state = jax.device_put(state, exp.state_sharding)
    log.info("initialised %d leaves from %s (not loaded: %s)", n, i.checkpoint, list(i.dont_load) or "none")
  if fit_probe is not None:
    state = jax.device_put(fit_probe(state), exp.state_sharding)
  state = state_lib.reset_ema(state)  # the moving average starts at the weights the init and the probe gave
  if fit_probe is not None:
    ckpt.save(0, state)
    ckpt.wait()
  return state, 0


def _data(config, workdir, pk):
  """(train source, eval batches, model-selection batches or None, DatasetInfo, text vocabulary or None, the
  preprocessing of a pretrained init or None). Called with the workdir held and a previous attempt moved aside
  (`--restart`), so a text run resumes with the vocabulary it started with and a new or restarted one builds its
  own from its training split."""
  vocab = build.vocab(config, workdir)
  train_src, info = data.get_source(config.dataset, config.dataset.train_split, vocab=vocab)
  info, prep = transfer.pretrained_preprocessing(config, info)
  eval_src, _ = data.eval_source(config.dataset, vocab=vocab)  # dataset.eval_name may name another data set
  dev_ds = None
  if config.model_selection.split:
    dev_src, _ = data.get_source(config.dataset, config.model_selection.split, vocab=vocab)
    dev_ds = data.eval_dataset(config, dev_src, info, **pk)
  if config.dataset.num_classes not in (-1, info.num_classes):
    raise ConfigError(f"config.dataset.num_classes={config.dataset.num_classes} but {config.dataset.name} has "
                      f"{info.num_classes} classes (use -1 to take the data set's)")
  if len(train_src) < config.batch_size:
    raise ConfigError(f"config.batch_size={config.batch_size} is larger than the {len(train_src)} training "
                      f"examples of {config.dataset.name}")
  return train_src, data.eval_dataset(config, eval_src, info, **pk), dev_ds, info, vocab, prep


def _write_records(exp: build.Experiment, workdir, conv_impls, vocab, prep) -> None:
  """What the run was built from, beside its checkpoints (process 0): config, conv_impls (what each layer ran),
  the pretrained init's preprocessing, the text vocabulary and the class names."""
  config, info = exp.config, exp.info
  workdir_lib.write_json(workdir / workdir_lib.CONFIG, json.loads(config.to_json_best_effort()))
  workdir_lib.write_json(workdir / workdir_lib.CONV_IMPLS, conv_impls)
  if prep is not None:
    workdir_lib.write_json(workdir / workdir_lib.PREPROCESSING, prep)
    log.info("preprocessing of %s: %s", config.init.checkpoint, prep)
  if vocab is not None:
    text.save_vocab(vocab, workdir)
  if info.class_names:  # what each label means, for data sets that name their classes (image folders)
    workdir_lib.write_json(workdir / workdir_lib.CLASS_NAMES, list(info.class_names))


def setup(config, workdir, *, restart: bool = False, allow_config_change: bool = False) -> Run:
  """Validates the config, then lock -> build -> restore -> write -> jit (see `Run`)."""
  parallel.initialize(config)
  config_lib.validate(config)
  parallel.enable_compilation_cache(config.compilation_cache_dir)
  autotune.configure(config.model.conv_autotune, config.compilation_cache_dir)
  workdir = workdir_lib.check(workdir)
  is_chief = jax.process_index() == 0
  pk = dict(process_index=jax.process_index(), process_count=jax.process_count())
  fresh = not workdir.exists()
  lock = _take_workdir(config, workdir, restart=restart, allow_config_change=allow_config_change,
                       is_chief=is_chief)
  try:
    train_src, eval_ds, dev_ds, info, vocab, prep = _data(config, workdir, pk)
    steps_per_epoch = len(train_src) // config.batch_size
    total_steps = config.num_train_steps if config.num_train_steps > 0 else config.num_epochs * steps_per_epoch
    if config.linear_probe.enabled:  # the head is fitted at initialisation; no training step (probe.py)
      total_steps = 0
    exp = build.experiment(config, info, steps_per_epoch, total_steps)
    log.info("%s", parallel.describe(exp.state_sharding))
    ckpt = checkpoint.Manager(workdir / workdir_lib.CHECKPOINTS, max_to_keep=config.keep_checkpoints)
    fit_probe = ((lambda s: probe.fit(config, s, exp.model, train_src, info)) if config.linear_probe.enabled
                 else None)
    state, start_step = _restore_or_init(exp, workdir, ckpt, fit_probe)
    network = None   # several processes, or no training: the network's gradient (process 0 alone times it)
    if jax.process_count() == 1 and total_steps > start_step:
      first = lambda: next(iter(data.train_dataset(config, train_src, info, start_step=start_step, **pk)))
      network = lambda: step_network(exp, state, parallel.global_batch(first(), exp.batch_sharding))
    conv_impls = conv_plan(exp.model, exp.input_shape, config, info, network)  # may measure: workdir held
    log.info("model %s: %d parameters; %d steps (%d per epoch) on %d devices in %d processes; starting at "
             "step %d", config.model.name, sum(x.size for x in jax.tree.leaves(state.params)), total_steps,
             steps_per_epoch, jax.device_count(), jax.process_count(), start_step)
    if is_chief:
      _write_records(exp, workdir, conv_impls, vocab, prep)
    writer = workdir_lib.MetricsWriter(workdir, enabled=is_chief)
    writer.truncate(start_step)
  except BaseException:
    if lock is not None:
      lock.release()
      if fresh:  # e.g. data not prepared: a failed first launch leaves no workdir behind
        workdir_lib.remove_if_unused(workdir)
    raise
  return Run(config=config, workdir=workdir, is_chief=is_chief, lock=lock, steps_per_epoch=steps_per_epoch,
             total_steps=total_steps, start_step=start_step, state=state, train_step=exp.train_step(),
             eval_step=exp.eval_step(), eval_ema_step=exp.eval_step(ema=True) if config.ema.decay > 0 else None,
             make_train_iter=lambda s: iter(data.train_dataset(config, train_src, info, start_step=s, **pk)),
             eval_ds=eval_ds, dev_ds=dev_ds, batch_sharding=exp.batch_sharding, ckpt=ckpt, writer=writer)


class TrainLog:
  """Collects the device metrics of each step and, at each log point, enforces config.on_nonfinite and writes
  one train entry (means over the steps since the last one, throughput, `input_wait`: the fraction of that
  interval's wall time the loop spent waiting for the input pipeline's next batch, and `wall_s`:
  the seconds this run has spent training, compiling and evaluating so far, summed over its attempts).

  With asynchronous dispatch the loop runs ahead of the devices until they push back (or a log point fetches the
  metrics), so a compute-bound run finds its batches ready (input_wait near 0) and an input-bound one shows about
  the fraction of the time the devices sat idle."""

  def __init__(self, r: Run, progress_bar):
    self.r, self.bar = r, progress_bar
    self.pending: List[Any] = []
    self.consecutive_bad = 0
    self.reset_clock()
    self.high_waits = 0   # log intervals in a row with input_wait > INPUT_WAIT_WARN
    self.last: Dict[str, float] = {}
    kept = [e for e in workdir_lib.read_jsonl(r.writer.path) if e["split"] == "train" and "wall_s" in e]
    self.wall_base, self.started = (kept[-1]["wall_s"] if kept else 0.0), time.perf_counter()

  def reset_clock(self) -> None:
    """Starts the throughput clock anew (after compiling, after an evaluation)."""
    self.examples, self.since, self.waited = 0, time.perf_counter(), 0.0

  def next_batch(self, train_iter):
    """The next global batch; the wait for the pipeline's batch counts toward input_wait. The copy to the devices
    does not: on CPU it queues behind the step still running, which is compute, not input."""
    t = time.perf_counter()
    local = next(train_iter)
    self.waited += time.perf_counter() - t
    return parallel.global_batch(local, self.r.batch_sharding)

  def _warn_input_bound(self, wait: float) -> None:
    self.high_waits = self.high_waits + 1 if wait > INPUT_WAIT_WARN else 0
    n = self.high_waits - INPUT_WAIT_PATIENCE
    if n >= 0 and n % INPUT_WAIT_REPEAT == 0:
      d = self.r.config.dataset
      log.warning("input-bound: the loop waited for input over %.0f%% of the time in %d log intervals in a row "
                  "(%.0f%% in the last). Raise config.dataset.num_workers (now %d; worker processes decode and "
                  "augment in parallel, up to one per free core) or config.dataset.prefetch (now %d batches read "
                  "ahead)",
                  100 * INPUT_WAIT_WARN, self.high_waits, 100 * wait, d.num_workers, d.prefetch)

  def add(self, m) -> None:
    self.pending.append(m)
    self.examples += self.r.config.batch_size

  def _check_finite(self, host, first: int) -> None:
    c = self.r.config
    for i, m in enumerate(host):
      bad = [q for q in ("loss", "grads") if bool(m[f"nonfinite_{q}"])]
      self.consecutive_bad = self.consecutive_bad + 1 if bad else 0
      if bad and (c.on_nonfinite == "stop" or self.consecutive_bad >= c.max_consecutive_nonfinite):
        why = ("config.on_nonfinite='stop'" if c.on_nonfinite == "stop" else
               f"{self.consecutive_bad} non-finite steps in a row (max_consecutive_nonfinite)")
        raise NonFiniteError(f"non-finite {' and '.join(bad)} at step {first + i} ({why}); that update was not "
                             f"applied. The latest checkpoint holds the last good state.")
      if bad:
        log.warning("step %d: non-finite %s; update skipped", first + i, " and ".join(bad))

  def flush(self, step: int) -> None:
    if not self.pending:
      return
    host, self.pending = jax.device_get(self.pending), []
    self._check_finite(host, step - len(host) + 1)
    summary = metrics.summarize(host)
    interval = max(time.perf_counter() - self.since, 1e-9)
    summary["examples_per_sec"] = self.examples / interval
    summary["input_wait"] = min(self.waited / interval, 1.0)
    summary["epoch"] = step / self.r.steps_per_epoch
    summary["wall_s"] = self.wall_base + time.perf_counter() - self.started
    self.reset_clock()
    self.r.writer.write(step, "train", summary)
    self.last = summary
    self.bar.set_postfix(loss=f"{summary['loss']:.4f}", top1=f"{summary['top1']:.3f}",
                         ex_s=f"{summary['examples_per_sec']:.0f}", wait=f"{summary['input_wait']:.0%}")
    if self.bar.disable:
      log.info("step %d/%d: loss %.4f top1 %.4f lr %.4g %.1f ex/s input_wait %.0f%%", step, self.r.total_steps,
               summary["loss"], summary["top1"], summary["learning_rate"], summary["examples_per_sec"],
               100 * summary["input_wait"])
    self._warn_input_bound(summary["input_wait"])


def eval_and_log(r: Run, state, step: int) -> Dict[str, Dict[str, float]]:
  """Evaluates the eval split (and the model-selection split, logged as 'dev'; with EMA also the eval split
  with the moving average, logged as 'eval_ema') and writes them. Returns {'eval': ..., ['eval_ema': ...]}."""
  out = {}
  for split, ds, step_fn in (("dev", r.dev_ds, r.eval_step), ("eval", r.eval_ds, r.eval_step),
                             ("eval_ema", r.eval_ds, r.eval_ema_step)):
    if ds is None or step_fn is None:
      continue
    ev = evaluate(step_fn, state, ds, r.batch_sharding)
    ev["epoch"] = step / r.steps_per_epoch
    r.writer.write(step, split, ev)
    log.info("%s at step %d: loss %.4f top1 %.4f top5 %.4f (%d examples)", split, step, ev["loss"], ev["top1"],
             ev["top5"], ev["count"])
    if split != "dev":
      out[split] = ev
  return out


def selected(entries, metric: str) -> Optional[Dict[str, Any]]:
  """Model selection: the step whose 'dev' entry is best on `metric` (top1 highest, loss lowest; ties: the
  later step), with its dev and eval metrics."""
  sign = -1.0 if metric == "loss" else 1.0
  dev = [e for e in entries if e["split"] == "dev" and isinstance(e.get(metric), (int, float))]
  if not dev:
    return None
  best = max(reversed(dev), key=lambda e: sign * e[metric])  # max keeps the first of equals: the latest
  ev = next((e for e in entries if e["split"] == "eval" and e["step"] == best["step"]), None)
  strip = lambda e: {k: v for k, v in e.items() if k not in ("step", "split")} if e else None
  return {"step": best["step"], "metric": metric, "dev": strip(best), "eval": strip(ev)}


def _progress(r: Run):
  from tqdm.auto import tqdm
  return tqdm(total=r.total_steps, initial=r.start_step, unit="step", dynamic_ncols=True, smoothing=0.1,
              disable=(not (r.config.progress_bar and r.is_chief)) or (not sys.stderr.isatty()), leave=True)


def _finish(r: Run, state, last: Dict[str, Dict[str, float]]) -> Dict[str, Dict[str, float]]:
  """At the last step: final_metrics.json, also when a rerun resumes at the last step (killed after the last
  checkpoint and before this file): its train and eval entries come from metrics.jsonl, evaluated anew if
  the last eval was never written."""
  step = r.total_steps
  logged = [e for e in workdir_lib.read_jsonl(r.writer.path) if e["step"] == step]
  for split in ("train", "eval", "eval_ema"):
    entry = next((e for e in reversed(logged) if e["split"] == split), None)
    if split not in last and entry is not None:
      last[split] = {k: v for k, v in entry.items() if k not in ("step", "split")}
  if "eval" not in last or (r.eval_ema_step is not None and "eval_ema" not in last):
    last.update(eval_and_log(r, state, step))
  if r.dev_ds is not None:
    last["selected"] = selected(workdir_lib.read_jsonl(r.writer.path), r.config.model_selection.metric)
  written = workdir_lib.read_json(r.workdir / FINAL) if r.is_chief else None
  if r.is_chief and (written or {}).get("step") != step:  # absent, or from a shorter run this one extends
    workdir_lib.write_json(r.workdir / FINAL, {"step": step, **last})
  return last


def _train(r: Run, end: int) -> Dict[str, Dict[str, float]]:
  """Steps from r.start_step to `end`, with the periodic actions; returns the last train/eval metrics."""
  c, state, step, last = r.config, r.state, r.start_step, {}
  bar = _progress(r)
  tlog = TrainLog(r, bar)
  train_iter = r.make_train_iter(step)
  t0 = time.perf_counter()
  try:
    with _SignalFlag() as sig:
      while step < end:
        batch = tlog.next_batch(train_iter)
        with jax.transfer_guard("disallow"):  # no implicit host round trip in the step; metrics stay on device
          state, m = r.train_step(state, batch)
        if step == r.start_step:
          jax.block_until_ready(m)
          log.info("first step (compile + run) took %.1f s", time.perf_counter() - t0)
          tlog.reset_clock()
        tlog.add(m)
        step += 1
        bar.update(1)
        stopping = _should_stop(sig, step)
        if step % c.log_every_steps == 0 or step == end or stopping:
          tlog.flush(step)
        if step % r.every(c.eval_every_steps) == 0 or step == r.total_steps:
          tlog.flush(step)
          last.update(eval_and_log(r, state, step))
          tlog.reset_clock()  # keep eval time out of the throughput
        if step % r.every(c.checkpoint_every_steps) == 0 or step == end or stopping:
          tlog.flush(step)  # raises before saving if this state's history went non-finite
          r.ckpt.save(step, state)
        if stopping:
          r.ckpt.wait()
          r.writer.flush()
          raise Preempted(step, sig.signum)
  finally:
    if hasattr(train_iter, "close"):
      train_iter.close()  # ends Grain's worker processes cleanly
    bar.close()
  r.state = state
  if tlog.last:
    last["train"] = tlog.last
  return last


def evaluate_checkpoint(config, workdir, *, step: Optional[int] = None, split: Optional[str] = None,
                        ema: bool = False) -> Dict[str, float]:
  """Evaluation only: restores the train state of `workdir`'s newest checkpoint (or `step`), evaluates every
  example of `split` (default `dataset.eval_split`) once and writes `<workdir>/eval/<split>_<step>.json`
  (`ema`: with the moving average of the weights, `<split>_ema_<step>.json`; the run must have config.ema.decay
  > 0). Takes no lock and changes nothing else, so it can run beside training."""
  if ema and not config.ema.decay > 0:
    raise ConfigError(f"--ema: the run keeps no moving average of its weights (config.ema.decay="
                      f"{config.ema.decay!r}); evaluate without --ema")
  parallel.initialize(config)
  config_lib.validate(config)
  workdir = workdir_lib.check(workdir)
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.dataset.eval_split = split or config.dataset.eval_split
  eval_src, info = data.eval_source(config.dataset, vocab=build.vocab(config, workdir))
  info, _ = transfer.pretrained_preprocessing(config, info)
  exp = build.experiment(config, info)
  if not (workdir / workdir_lib.CHECKPOINTS).is_dir():  # checked first: the manager would create the folder
    raise ConfigError(f"no checkpoint to evaluate in {workdir / workdir_lib.CHECKPOINTS}")
  ckpt = checkpoint.Manager(workdir / workdir_lib.CHECKPOINTS)
  try:
    state, step = exp.restore(ckpt, step)
  finally:
    ckpt.close()
  if state is None:
    raise ConfigError(f"no checkpoint to evaluate in {workdir / workdir_lib.CHECKPOINTS}")
  pk = dict(process_index=jax.process_index(), process_count=jax.process_count())
  ev = evaluate(exp.eval_step(ema), state, data.eval_dataset(config, eval_src, info, **pk), exp.batch_sharding)
  if jax.process_index() == 0:
    name = f"{config.dataset.eval_split}_{'ema_' if ema else ''}{step}.json"
    workdir_lib.write_json(workdir / workdir_lib.EVAL / name, {"step": step, "split": config.dataset.eval_split,
                                                               "ema": ema, **ev})
  return {"step": step, **ev}


def run(config, workdir, *, stop_after_steps: Optional[int] = None, restart: bool = False,
        allow_config_change: bool = False) -> Dict[str, Dict[str, float]]:
  """Trains `config` in `workdir` (resuming from its latest checkpoint). Returns the last train/eval metrics.

  `stop_after_steps` ends the run early, with a checkpoint, once that step is reached, without changing the
  schedule (which depends only on the config): for time-boxed jobs and resume tests. `restart` moves a previous
  attempt aside (kept) and starts at step 0.
  """
  r = setup(config, workdir, restart=restart, allow_config_change=allow_config_change)
  try:
    end = r.total_steps if stop_after_steps is None else min(r.total_steps, stop_after_steps)
    last = _train(r, end)
    if r.state is not None and end == r.total_steps:
      last = _finish(r, r.state, last)
  finally:
    r.close()
  log.info("process %d: final parameters fingerprint %s", jax.process_index(), fingerprint(r.state.params))
  if r.is_chief:
    print(f"Done: step {end}. Results in {r.workdir}: metrics.jsonl, tensorboard/, checkpoints/, config.json")
    if "eval" in last:
      print(f"  eval: top1 {last['eval']['top1']:.4f}, top5 {last['eval']['top5']:.4f}, "
            f"loss {last['eval']['loss']:.4f} on {int(last['eval']['count'])} examples")
    if "eval_ema" in last:
      print(f"  eval with the EMA weights: top1 {last['eval_ema']['top1']:.4f}, top5 {last['eval_ema']['top5']:.4f}, "
            f"loss {last['eval_ema']['loss']:.4f}")
  return last
