"""One run per workdir: the lock's message, the bucket lock's heartbeat, refusal and stale takeover, and a busy
bucket workdir through the entry point (exit 4). The bucket is a local folder behind fsspec (tests/_fake_bucket)."""
import json
import os
import socket
import time

import pytest

from cnnjax import workdir as workdir_lib
from tests import _fake_bucket, helpers


def _since(t):
  return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


@pytest.fixture
def bucket(tmp_path):
  """gs:// served from tmp_path/bucket-root in this process (epath only); the previous gs handlers restored."""
  from fsspec.registry import _registry
  saved = {k: _registry.get(k) for k in ("gs", "gcs")}
  _fake_bucket.install_fsspec(str(tmp_path / "bucket-root"))
  yield tmp_path / "bucket-root"
  for k, v in saved.items():
    if v is None:
      _registry.pop(k, None)
    else:
      _registry[k] = v


def test_local_lock_message_names_host_pid_and_start_time(tmp_path):
  held = workdir_lib.Lock(str(tmp_path)).acquire()
  try:
    started = held.info["started"]
    with pytest.raises(workdir_lib.WorkdirBusyError) as e:
      workdir_lib.Lock(str(tmp_path)).acquire()
    assert (f"in use by pid {os.getpid()} on {socket.gethostname()} (running since {_since(started)})"
            in str(e.value))
  finally:
    held.release()
  workdir_lib.Lock(str(tmp_path)).acquire().release()  # released: free again


def test_bucket_lock_heartbeat_refusal_release_and_stale_takeover(bucket):
  path = bucket / "lab" / "w" / "lock.json"
  lock = workdir_lib.Lock("gs://lab/w", heartbeat_s=0.05, stale_s=300).acquire()
  try:
    first = json.loads(path.read_text())
    assert first["pid"] == os.getpid()
    deadline = time.time() + 30
    while json.loads(path.read_text())["heartbeat"] == first["heartbeat"] and time.time() < deadline:
      time.sleep(0.05)
    assert json.loads(path.read_text())["heartbeat"] > first["heartbeat"]  # the holder keeps it fresh
    with pytest.raises(workdir_lib.WorkdirBusyError, match=rf"in use by pid {os.getpid()} on "
                                                           rf"{socket.gethostname()} \(running since "):
      workdir_lib.Lock("gs://lab/w").acquire()
  finally:
    lock.release()
  assert not path.exists()  # a clean exit leaves no holder
  dead = {"host": "elsewhere", "pid": 4242, "started": time.time() - 3600, "heartbeat": time.time() - 301}
  path.write_text(json.dumps(dead))
  taker = workdir_lib.Lock("gs://lab/w", stale_s=300).acquire()  # heartbeat older than stale_s: abandoned
  try:
    assert taker.previous == dead and json.loads(path.read_text())["pid"] == os.getpid()
  finally:
    taker.release()
  fresh = {**dead, "heartbeat": time.time() - 200}
  path.write_text(json.dumps(fresh))
  with pytest.raises(workdir_lib.WorkdirBusyError, match=r"in use by pid 4242 on elsewhere"):
    workdir_lib.Lock("gs://lab/w", stale_s=300).acquire()
  assert json.loads(path.read_text()) == fresh  # the refused launch wrote nothing


@pytest.mark.slow
@pytest.mark.subprocess
def test_busy_bucket_workdir_exits_4_through_the_entry_point(tmp_path):
  root = tmp_path / "bucket-root"
  (root / "lab" / "w").mkdir(parents=True)
  holder = {"host": "elsewhere", "pid": 4242, "started": time.time(), "heartbeat": time.time() + 3600}
  (root / "lab" / "w" / "lock.json").write_text(json.dumps(holder))
  cmd = ["tests._fake_bucket", str(root), "experiments.main", "--config",
         os.path.join(helpers.ROOT, "configs/resnet.py"), "--workdir", "gs://lab/w", *helpers.TINY]
  r = helpers.run_module(*cmd, cwd=tmp_path, timeout=300)
  assert r.returncode == 4, r.stderr[-2000:]
  assert f"in use by pid 4242 on elsewhere (running since {_since(holder['started'])})" in r.stderr
  assert not (root / "lab" / "w" / "config.json").exists()


def test_a_failed_first_launch_leaves_no_workdir_but_never_removes_a_used_one(tmp_path):
  """remove_if_unused: a workdir holding only a released (empty) lock goes; one whose lock names a holder, or
  that holds anything else, stays untouched."""
  from cnnjax import workdir as workdir_lib
  empty, held, used = tmp_path / "empty", tmp_path / "held", tmp_path / "used"
  for d in (empty, held, used):
    d.mkdir()
    (d / workdir_lib.LOCK).write_text("")
  (held / workdir_lib.LOCK).write_text('{"pid": 1}')
  (used / "metrics.jsonl").write_text("{}\n")
  for d in (empty, held, used):
    workdir_lib.remove_if_unused(d)
  assert not empty.exists()
  assert (held / workdir_lib.LOCK).read_text() == '{"pid": 1}'
  assert (used / "metrics.jsonl").exists() and (used / workdir_lib.LOCK).exists()
