"""The training loop: `run(config, workdir)` trains, evaluates, checkpoints and resumes.

Everything it needs comes from the config; it holds no global state. The same function runs on one CPU, on a
GPU host and on every process of a multi-host TPU slice (batches are global jax.Arrays over the 'data' mesh
axis; only process 0 writes metrics).
"""
import logging
import os
import sys
import time
from typing import Dict, Optional

import jax
import numpy as np

from cnnjax import checkpoint, data, metrics, models, parallel
from cnnjax import config as config_lib
from cnnjax.train import optim, state as state_lib, steps

log = logging.getLogger("cnnjax")


def _progress(total: int, initial: int, enabled: bool):
  from tqdm.auto import tqdm
  return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, smoothing=0.1,
              disable=(not enabled) or (not sys.stderr.isatty()), leave=True)


def evaluate(eval_step, state, eval_ds, sharding) -> Dict[str, float]:
  """Runs `eval_step` over every batch of `eval_ds` and returns mean loss, top-1 and top-5 accuracy."""
  sums = None
  for batch in eval_ds:
    out = eval_step(state, parallel.global_batch(batch, sharding))
    sums = out if sums is None else jax.tree.map(lambda a, b: a + b, sums, out)
  return metrics.summarize([jax.device_get(sums)])


def run(config, workdir: str, *, stop_after_steps: Optional[int] = None) -> Dict[str, Dict[str, float]]:
  """Trains `config` in `workdir` (resuming from its latest checkpoint). Returns the last train/eval metrics.

  `stop_after_steps` ends the run early, with a checkpoint, once that step is reached, without changing the
  schedule (which depends only on the config): for time-boxed jobs and resume tests.
  """
  config_lib.validate(config)
  parallel.enable_compilation_cache(config.compilation_cache_dir)
  workdir = os.path.abspath(workdir)
  is_chief = jax.process_index() == 0
  if is_chief:
    os.makedirs(workdir, exist_ok=True)
    config_lib.save_json(config, workdir)

  # Data.
  train_src, info = data.get_source(config.dataset, config.dataset.train_split)
  eval_src, _ = data.get_source(config.dataset, config.dataset.eval_split)
  steps_per_epoch = len(train_src) // config.batch_size
  if steps_per_epoch < 1:
    raise ValueError(f"config.batch_size={config.batch_size} is larger than the {len(train_src)} training "
                     f"examples of {config.dataset.name}")
  total_steps = config.num_train_steps if config.num_train_steps > 0 else config.num_epochs * steps_per_epoch
  every = lambda v: steps_per_epoch if v == -1 else v
  pk = dict(process_index=jax.process_index(), process_count=jax.process_count())
  train_iter = iter(data.train_dataset(config, train_src, info, **pk))
  eval_ds = data.eval_dataset(config, eval_src, info, **pk)

  # Model, optimizer, state.
  model = models.create(config.model.name, num_classes=info.num_classes, **config_lib.model_options(config))
  tx, schedule = optim.build(config, steps_per_epoch, total_steps)
  mesh = parallel.mesh()
  repl, batch_sharding = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  input_shape = (config.dataset.image_size, config.dataset.image_size, info.image_shape[-1])
  init = jax.jit(lambda rng: state_lib.create(rng, model, tx, input_shape), out_shardings=repl)
  state = init(jax.random.PRNGKey(config.seed))
  n_params = sum(x.size for x in jax.tree.leaves(state.params))
  log.info("model %s: %d parameters; %d steps (%d per epoch)", config.model.name, n_params, total_steps,
               steps_per_epoch)

  ckpt = checkpoint.Manager(os.path.join(workdir, "checkpoints"), max_to_keep=config.keep_checkpoints)
  restored, start_step = ckpt.restore(state, train_iter)
  if restored is not None:
    state = restored
  start_step = start_step or 0
  writer = metrics.Writer(workdir, enabled=is_chief)
  writer.truncate(start_step)

  train_step = jax.jit(steps.make_train_step(model, tx, schedule, label_smoothing=config.label_smoothing,
                                             aux_loss_weight=config.aux_loss_weight),
                       in_shardings=(repl, batch_sharding), out_shardings=(repl, repl), donate_argnums=0)
  eval_step = jax.jit(steps.make_eval_step(model), in_shardings=(repl, batch_sharding), out_shardings=repl)

  last: Dict[str, Dict[str, float]] = {}
  pending = []
  bar = _progress(total_steps, start_step, config.progress_bar and is_chief)
  t_log, n_log = time.perf_counter(), 0
  step = start_step
  end = total_steps if stop_after_steps is None else min(total_steps, stop_after_steps)
  try:
    while step < end:
      batch = parallel.global_batch(next(train_iter), batch_sharding)
      t0 = time.perf_counter()
      state, m = train_step(state, batch)
      if step == start_step:
        jax.block_until_ready(m)
        log.info("first step (compile + run) took %.1f s", time.perf_counter() - t0)
        t_log, n_log = time.perf_counter(), 0
      pending.append(m)
      step += 1
      n_log += config.batch_size
      bar.update(1)
      if step % config.log_every_steps == 0 or step == end:
        summary = metrics.summarize(jax.device_get(pending))
        pending = []
        now = time.perf_counter()
        summary["examples_per_sec"] = n_log / max(now - t_log, 1e-9)
        summary["epoch"] = step / steps_per_epoch
        t_log, n_log = now, 0
        writer.write(step, "train", summary)
        last["train"] = summary
        bar.set_postfix(loss=f"{summary['loss']:.4f}", top1=f"{summary['top1']:.3f}",
                        ex_s=f"{summary['examples_per_sec']:.0f}")
        if bar.disable:
          log.info("step %d/%d: loss %.4f top1 %.4f lr %.4g %.1f ex/s", step, total_steps, summary["loss"],
                       summary["top1"], summary["learning_rate"], summary["examples_per_sec"])
      if step % every(config.eval_every_steps) == 0 or step == total_steps:
        ev = evaluate(eval_step, state, eval_ds, batch_sharding)
        ev["epoch"] = step / steps_per_epoch
        writer.write(step, "eval", ev)
        last["eval"] = ev
        log.info("eval at step %d: loss %.4f top1 %.4f top5 %.4f (%d examples)", step, ev["loss"], ev["top1"],
                     ev["top5"], ev["count"])
        t_log, n_log = time.perf_counter(), 0  # keep eval time out of the throughput
      if step % every(config.checkpoint_every_steps) == 0 or step == end:
        ckpt.save(step, state, train_iter)
  finally:
    bar.close()
    ckpt.wait()
    ckpt.close()
    writer.close()
  if is_chief:
    print(f"Done: {step} steps. Results in {workdir}: metrics.jsonl, tensorboard/, checkpoints/, config.json")
    if "eval" in last:
      print(f"  eval: top1 {last['eval']['top1']:.4f}, top5 {last['eval']['top5']:.4f}, "
            f"loss {last['eval']['loss']:.4f} on {int(last['eval']['count'])} examples")
  return last
