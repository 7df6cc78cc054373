"""Exponential moving average of the weights: the numpy float64 recurrence over the saved parameters, an exact
resume, the layout of checkpoints without it, its evaluation, --mode=eval and init from it."""
import jax
import numpy as np
import pytest
from flax import traverse_util

from cnnjax import checkpoint
from cnnjax.errors import ConfigError
from cnnjax.train import loop
from tests.helpers import assert_resume_is_exact, tiny_config

DECAY, START = 0.7, 2


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory):
  """6 steps with ema.decay=0.7 from update 2 on, a checkpoint after every step."""
  w = tmp_path_factory.mktemp("ema")
  c = tiny_config(checkpoint_every_steps=1, keep_checkpoints=10, **{"ema.decay": DECAY, "ema.start_step": START})
  final = loop.run(c, str(w))
  return c, str(w), final


def _flat(tree):
  return traverse_util.flatten_dict(tree, sep="/")


@pytest.mark.slow
def test_ema_equals_a_float64_recurrence_over_the_saved_weights(ema_run):
  """Update s (0-based) leaves weights w_{s+1}; the average is w_{s+1} for s < start_step, then
  decay * average + (1 - decay) * w_{s+1}: for the parameters and the batch-norm statistics alike. Catches a
  wrong decay (or 1 - decay), an average of the old weights instead of the new, an off-by-one start, and batch
  statistics left out."""
  _, w, _ = ema_run
  states = {s: checkpoint.load_numpy(w, s)[0] for s in range(1, 7)}
  ref = None
  for s in range(6):                      # update s gives the checkpoint of step s + 1
    new = {k: np.asarray(v, np.float64) for k, v in _flat({"params": states[s + 1]["params"],
                                                            "batch_stats": states[s + 1]["batch_stats"]}).items()}
    ref = new if s < START else {k: DECAY * ref[k] + (1 - DECAY) * new[k] for k in new}
    got = _flat(states[s + 1]["ema"])
    assert set(got) == set(ref) and any(k.startswith("batch_stats/") for k in got)
    for k in ref:
      np.testing.assert_allclose(got[k], ref[k], rtol=2e-6, atol=1e-7, err_msg=f"step {s + 1}, {k}")
  assert not np.allclose(_flat(states[6]["ema"])["params/head/kernel"], states[6]["params"]["head"]["kernel"])


@pytest.mark.slow
def test_ema_eval_is_the_average_weights_evaluated_and_mode_eval_reads_it(ema_run):
  """'eval_ema' in metrics.jsonl and final_metrics.json equals the plain evaluation of a state whose weights are
  the saved average (catches an eval_ema that evaluates the raw weights, or the raw statistics with averaged
  parameters); --mode=eval with ema=True gives the same and writes <split>_ema_<step>.json."""
  import jax.numpy as jnp
  from cnnjax import data, metrics, models, workdir as workdir_lib
  from cnnjax.train import state as state_lib, steps
  c, w, final = ema_run
  s, _ = checkpoint.load_numpy(w)
  entries = workdir_lib.read_jsonl(workdir_lib.path(w) / "metrics.jsonl")
  assert [e["step"] for e in entries if e["split"] == "eval_ema"] == [3, 6]
  model = models.create("resnet20", num_classes=10, stage_sizes=(1, 1, 1), width=0.5)
  src, info = data.eval_source(c.dataset)

  raw = state_lib.TrainState(step=jnp.int32(0), params=s["ema"]["params"], batch_stats=s["ema"]["batch_stats"],
                             opt_state=(), rng=jax.random.PRNGKey(0))  # the average as a state's raw weights
  eval_step = jax.jit(steps.make_eval_step(model))
  prep = data.on_device(c, info)  # the uint8 images normalised, as inside the loop's eval step
  sums = [jax.device_get(eval_step(raw, prep(b))) for b in data.eval_dataset(c, src, info)]
  want = metrics.summarize(sums)
  assert final["eval_ema"]["top1"] == pytest.approx(want["top1"], abs=1e-9)
  assert final["eval_ema"]["loss"] == pytest.approx(want["loss"], rel=1e-5)
  assert final["eval_ema"]["loss"] != final["eval"]["loss"]
  ev = loop.evaluate_checkpoint(c, w, ema=True)
  assert ev["loss"] == pytest.approx(final["eval_ema"]["loss"], rel=1e-6)
  assert (workdir_lib.path(w) / "eval" / "test_ema_6.json").exists()
  assert loop.evaluate_checkpoint(c, w)["loss"] == pytest.approx(final["eval"]["loss"], rel=1e-6)


@pytest.mark.slow
def test_init_and_probe_from_the_moving_average(tmp_path, ema_run):
  """init.ema=True loads the average (the linear probe then fits on its features; the backbone at step 0 equals
  the source's average, not its raw weights); a run with EMA starts its own average at those weights."""
  _, w, _ = ema_run
  src, _ = checkpoint.load_numpy(w)
  c = tiny_config(**{"init.checkpoint": w, "init.ema": True, "init.dont_load": ("head",), "linear_probe.enabled": True,
                     "ema.decay": 0.9})
  loop.run(c, str(tmp_path / "probe"))
  b, step = checkpoint.load_numpy(str(tmp_path / "probe"))
  assert step == 0
  for k in src["params"]:
    if k != "head":
      jax.tree.map(np.testing.assert_array_equal, b["params"][k], src["ema"]["params"][k])
  jax.tree.map(np.testing.assert_array_equal, b["batch_stats"], src["ema"]["batch_stats"])
  jax.tree.map(np.testing.assert_array_equal, b["ema"]["params"], b["params"])  # the fitted head included


@pytest.mark.slow
def test_init_ema_from_a_run_without_it_names_the_field(tmp_path):
  loop.run(tiny_config(num_train_steps=1, checkpoint_every_steps=1), str(tmp_path / "plain"))
  c = tiny_config(num_train_steps=1, **{"init.checkpoint": str(tmp_path / "plain"), "init.ema": True})
  with pytest.raises(ConfigError, match="init.ema=True.*holds no moving average"):
    loop.run(c, str(tmp_path / "b"))
  with pytest.raises(ConfigError, match="ema.decay"):
    loop.run(tiny_config(**{"ema.decay": 1.0}), str(tmp_path / "c"))


@pytest.mark.slow
def test_a_run_without_ema_keeps_the_checkpoint_layout_and_resumes_one_written_before(tmp_path):
  """ema.decay=0: the saved state has exactly the five fields of before (step, params, batch_stats, opt_state,
  rng) and a checkpoint written in that layout by a separately defined state class restores and trains on
  (catches an `ema` field added to TrainState: Orbax then refuses the old checkpoints)."""
  import flax
  from typing import Any
  from cnnjax import models
  from cnnjax.train import optim, state as state_lib

  @flax.struct.dataclass
  class Before:  # the train state's layout before the moving average existed
    step: Any
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: Any

  c = tiny_config(num_train_steps=4)
  loop.run(tiny_config(num_train_steps=2, checkpoint_every_steps=2), str(tmp_path / "new"))
  s, _ = checkpoint.load_numpy(str(tmp_path / "new"))
  assert sorted(s) == ["batch_stats", "opt_state", "params", "rng", "step"]
  model = models.create("resnet20", num_classes=10, stage_sizes=(1, 1, 1), width=0.5)
  tx, _ = optim.build(c, 28, 4)
  fresh = state_lib.create(jax.random.PRNGKey(1), model, tx, (8, 8, 1))
  mgr = checkpoint.Manager(tmp_path / "old" / "checkpoints")
  mgr.save(2, Before(fresh.step + 2, fresh.params, fresh.batch_stats, fresh.opt_state, fresh.rng))
  mgr.wait()
  mgr.close()
  final = loop.run(c, str(tmp_path / "old"))  # resumes at step 2 from the old layout
  assert checkpoint.load_numpy(str(tmp_path / "old"))[1] == 4 and "eval" in final


@pytest.mark.slow
def test_resume_with_ema_and_mixing_is_exact(tmp_path):
  """Stopped after 3 steps and resumed, a run with EMA, Mixup and CutMix (switching) ends bit-identical to an
  uninterrupted one: the average is checkpointed, and every mixing draw comes from fold_in(state.rng, step)."""
  c = tiny_config(**{"ema.decay": 0.8, "mixup.alpha": 0.2, "cutmix.alpha": 1.0, "label_smoothing": 0.1})
  a = assert_resume_is_exact(c, tmp_path, stop_after=3)
  assert "ema" in a
