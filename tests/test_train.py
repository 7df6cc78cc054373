"""End-to-end runs of the training loop on tiny configs."""
import json
import os
import time

import jax
import numpy as np
import pytest

from cnnjax.workdir import read_jsonl
from cnnjax import checkpoint
from cnnjax.train import loop
from tests.helpers import metrics, tiny_config


def _final_params(workdir, config):
  """The params of the newest checkpoint, as numpy (restored without a template)."""
  import orbax.checkpoint as ocp
  mgr = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
  step = mgr.latest_step()
  restored = mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  mgr.close()
  return step, jax.tree.map(np.asarray, restored["state"])


@pytest.mark.slow
def test_few_steps_write_their_outputs(tmp_path):
  """Entries at the log and eval steps; the logged learning rate is the cosine schedule's at the update each
  entry's last step applied (step - 1 updates before it), worked out here from the formula; every test example
  evaluated once; config, checkpoints and the conv plan written."""
  c = tiny_config(num_train_steps=12, log_every_steps=3, eval_every_steps=6, checkpoint_every_steps=6,
                  learning_rate=0.1)
  last = loop.run(c, str(tmp_path))
  entries = read_jsonl(str(tmp_path / "metrics.jsonl"))
  train = [e for e in entries if e["split"] == "train"]
  evals = [e for e in entries if e["split"] == "eval"]
  assert [e["step"] for e in train] == [3, 6, 9, 12]
  assert [e["step"] for e in evals] == [6, 12]
  want_lr = [0.1 * 0.5 * (1 + np.cos(np.pi * (s - 1) / 12)) for s in (3, 6, 9, 12)]
  np.testing.assert_allclose([e["learning_rate"] for e in train], want_lr, rtol=1e-5)  # float32
  assert all(e["count"] == 3 * 32 for e in train)  # 3 steps of 32 examples per entry
  # Evaluation counts every test example once: 355 is not a multiple of the eval batch (64).
  assert all(e["count"] == 355 for e in evals)
  assert last["eval"]["top1"] == evals[-1]["top1"]
  saved = json.loads((tmp_path / "config.json").read_text())
  assert saved["model"]["name"] == "resnet20" and saved["num_train_steps"] == 12
  assert checkpoint.Manager(str(tmp_path / "checkpoints")).all_steps() == [6, 12]
  step, state = _final_params(str(tmp_path), c)
  assert step == 12 and int(state["step"]) == 12
  # conv_impls.json: one entry per convolution (counted here as the rank-4 kernels), each with what 'auto' ran
  # (the tests' conv_autotune='cached' with an empty cache: plain lax, undecided), the backend, the XLA flags and
  # the machine key the decisions would be cached under.
  plan = json.loads((tmp_path / "conv_impls.json").read_text())
  kernels = [x for x in jax.tree.leaves(state["params"]) if np.ndim(x) == 4]
  assert len(plan["layers"]) == len(kernels) and {p["requested"] for p in plan["layers"]} == {"auto"}
  assert {p["used"] for p in plan["layers"]} == {"xla"}
  assert plan["backend"] == "cpu" and "--xla_cpu_experimental_ynn_fusion_type=" in plan["xla_flags"]
  assert plan["machine"]["cpu"] and plan["machine"]["xla_flags"] == plan["xla_flags"]
  assert plan["autotune"]["mode"] == "cached" and not plan["autotune"]["plan_from_cache"]
  assert plan["autotune"]["undecided"] == plan["autotune"]["shapes"] > 0 and plan["autotune"]["measured"] == 0


def test_eval_metrics_equal_a_numpy_recount(finished_run):
  """The eval top-1, top-5 and loss the loop logged at the last step equal a float64 numpy recount (argsort,
  log-softmax) from the restored model's logits, on a model that gets some test examples right and some wrong:
  metrics that count every example right, or none, or the wrong ones, or the padding, would pass on a model
  that is always right or always wrong."""
  from cnnjax import data, models
  from cnnjax import config as config_lib
  c, workdir = finished_run
  state, step = checkpoint.load_numpy(str(workdir))
  logged = metrics(workdir, "eval")[-1]
  assert step == logged["step"] == 6
  src, info = data.get_source(c.dataset, "test")
  model = models.create(c.model.name, num_classes=10, **config_lib.model_options(c))
  apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
  hits, loss, n = {1: 0, 5: 0}, 0.0, 0
  for batch in data.eval_dataset(c, src, info):
    batch = data.on_device(c, info)(batch)   # the uint8 images normalised, as inside the eval step
    z = np.asarray(apply({"params": state["params"], "batch_stats": state["batch_stats"]}, batch["image"]),
                   np.float64)
    m, labels = np.asarray(batch["mask"], bool), np.asarray(batch["label"])
    ranked = np.argsort(-z, axis=-1, kind="stable")
    for k in hits:
      hits[k] += int(((ranked[:, :k] == labels[:, None]).any(-1) & m).sum())
    z = z - z.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    loss -= float(logp[np.arange(len(labels)), labels][m].sum())
    n += int(m.sum())
  assert n == logged["count"] == 355
  assert 0 < hits[1] < hits[5] < n, hits  # some right, some wrong, and top-5 is not top-1
  assert abs(logged["top1"] - hits[1] / n) < 1e-6 and abs(logged["top5"] - hits[5] / n) < 1e-6
  np.testing.assert_allclose(logged["loss"], loss / n, rtol=1e-5)


def test_stop_and_resume_equals_straight_run(tmp_path):
  c = tiny_config(num_train_steps=6, checkpoint_every_steps=3, log_every_steps=3,
                  **{"dataset.augment": "pad_crop"})
  loop.run(c, str(tmp_path / "straight"))
  loop.run(c, str(tmp_path / "resumed"), stop_after_steps=3)
  assert checkpoint.Manager(str(tmp_path / "resumed" / "checkpoints")).all_steps() == [3]
  # wall_s sums the attempts: pretend the first took 1000 s; the resumed run's next entry goes on from there.
  path = tmp_path / "resumed" / "metrics.jsonl"
  first = [dict(e, wall_s=1000.0) if e["split"] == "train" else e for e in read_jsonl(str(path))]
  path.write_text("".join(json.dumps(e) + "\n" for e in first))
  t0 = time.perf_counter()
  loop.run(c, str(tmp_path / "resumed"))
  second = time.perf_counter() - t0
  wall = [e["wall_s"] for e in read_jsonl(str(path)) if e["split"] == "train"]
  assert wall[0] == 1000.0 and 1000.0 < wall[1] <= 1000.0 + second
  _, a = _final_params(str(tmp_path / "straight"), c)
  _, b = _final_params(str(tmp_path / "resumed"), c)
  jax.tree.map(np.testing.assert_array_equal, a, b)
  # metrics.jsonl of the resumed run has each step once, and equals the straight run's losses.
  ma = [e for e in read_jsonl(str(tmp_path / "straight" / "metrics.jsonl")) if e["split"] == "train"]
  mb = [e for e in read_jsonl(str(tmp_path / "resumed" / "metrics.jsonl")) if e["split"] == "train"]
  assert [e["step"] for e in mb] == [e["step"] for e in ma]
  np.testing.assert_array_equal([e["loss"] for e in mb], [e["loss"] for e in ma])


@pytest.mark.slow
def test_rerun_of_finished_run_does_nothing_more(tmp_path):
  c = tiny_config(num_train_steps=3)
  loop.run(c, str(tmp_path))
  n = len(read_jsonl(str(tmp_path / "metrics.jsonl")))
  loop.run(c, str(tmp_path))
  assert len(read_jsonl(str(tmp_path / "metrics.jsonl"))) == n


def test_steps_run_under_a_transfer_guard(tmp_path, monkeypatch):
  """Train and eval steps run under jax.transfer_guard('disallow'): a full run passes (the tests above), and a
  batch that was not put on the devices explicitly is refused instead of copied on every step."""
  from cnnjax import parallel
  monkeypatch.setattr(parallel, "global_batch", lambda batch, sharding: dict(batch))  # numpy, not jax.Array
  with pytest.raises(Exception, match="[Dd]isallowed host-to-device transfer"):
    loop.run(tiny_config(num_train_steps=2, log_every_steps=1), str(tmp_path))
  path = tmp_path / "metrics.jsonl"
  assert not path.exists() or not read_jsonl(str(path)), "the first train step ran unguarded"
