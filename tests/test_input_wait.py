"""input_wait: the fraction of each logged interval the training loop waited for its next batch, and the warning
that names the fix when it stays high."""
import logging
import time

import pytest

from cnnjax import data
from cnnjax.train import loop
from cnnjax.workdir import read_jsonl
from tests.helpers import tiny_config

SLEEP = 0.1   # seconds each batch of the slow source takes on top of the real pipeline


class _Wrapped:
  """The real training stream, each batch delayed by `sleep` seconds (slow) or read in full up front (fast)."""

  def __init__(self, ds, sleep: float, upfront: int = 0):
    self.it, self.sleep = iter(ds), sleep
    self.ready = [next(self.it) for _ in range(upfront)]

  def __iter__(self):
    return self

  def __next__(self):
    if self.ready:
      return self.ready.pop(0)
    time.sleep(self.sleep)
    return next(self.it)


def _run(tmp_path, monkeypatch, caplog, **wrap):
  real = data.train_dataset
  monkeypatch.setattr(data, "train_dataset", lambda *a, **k: _Wrapped(real(*a, **k), **wrap))
  c = tiny_config(num_train_steps=15, log_every_steps=3, eval_every_steps=6, checkpoint_every_steps=15)
  with caplog.at_level(logging.WARNING, logger="cnnjax"):
    loop.run(c, str(tmp_path))
  train = [e for e in read_jsonl(str(tmp_path / "metrics.jsonl")) if e["split"] == "train"]
  warnings = [r.getMessage() for r in caplog.records if "input-bound" in r.getMessage()]
  return c, train, warnings


@pytest.mark.slow   # about 10 s: five intervals of sleeping batches
def test_slow_source_shows_its_sleep_in_input_wait_and_warns_once(tmp_path, monkeypatch, caplog):
  """Every batch sleeps SLEEP s, so an interval of n steps holds n * SLEEP s of waiting at least: input_wait
  >= SLEEP * steps / interval = SLEEP * examples_per_sec / batch_size, from the entry's own measured throughput.
  (The first entry is skipped: its interval starts after the compiling step, whose batch was fetched before.)
  Catches a wait not counted, counted in the wrong interval or divided by the wrong time; and a warning that is
  not given, or given on every line after the third high interval."""
  c, train, warnings = _run(tmp_path, monkeypatch, caplog, sleep=SLEEP)
  assert [e["step"] for e in train] == [3, 6, 9, 12, 15]
  for e in train[1:]:
    floor = SLEEP * e["examples_per_sec"] / c.batch_size
    assert floor > loop.INPUT_WAIT_WARN, (e, floor)   # the sleep dominates this tiny model's step
    assert floor - 1e-3 <= e["input_wait"] <= 1.0, (e, floor)
  assert len(warnings) == 1, warnings   # 5 high intervals: warned at the 3rd, not again before the repeat
  assert "config.dataset.num_workers" in warnings[0] and "config.dataset.prefetch" in warnings[0]


def test_fast_source_has_low_input_wait_and_no_warning(tmp_path, monkeypatch, caplog):
  """Batches read in full before training: the loop only takes them from a list and copies them to the device,
  so its wait is a small part of each interval, below the warning threshold, and nothing is warned. Catches an
  input_wait that counts the step itself (near 1 here)."""
  _, train, warnings = _run(tmp_path, monkeypatch, caplog, sleep=0.0, upfront=15)
  assert all(e["input_wait"] < loop.INPUT_WAIT_WARN for e in train), [e["input_wait"] for e in train]
  assert warnings == []
