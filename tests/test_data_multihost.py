"""Two real JAX processes (jax.distributed on 127.0.0.1, CPU, gloo): each reads its own shard, and the local
batches become one global jax.Array that equals the single-process global batch, up to the known order."""
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

WORKER = textwrap.dedent("""
    import sys
    import numpy as np
    import cnnjax  # noqa: F401
    import jax
    from jax.experimental import multihost_utils
    port, pid, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=pid,
                               initialization_timeout=60)
    from cnnjax import data, parallel
    from tests.test_data_multihost import config
    c = config()
    src, info = data.get_source(c.dataset, "train")
    it = iter(data.train_dataset(c, src, info, process_index=jax.process_index(), process_count=2))
    sharding = parallel.batch_sharded(parallel.mesh())
    images, labels = [], []
    for _ in range(3):
      g = parallel.global_batch(next(it), sharding)
      assert g["image"].shape[0] == c.batch_size, g["image"].shape
      images.append(multihost_utils.process_allgather(g["image"], tiled=True))
      labels.append(multihost_utils.process_allgather(g["label"], tiled=True))
    esrc, _ = data.get_source(c.dataset, "test")
    count = 0
    for b in data.eval_dataset(c, esrc, info, process_index=jax.process_index(), process_count=2):
      g = parallel.global_batch(b, sharding)
      count += int(jax.jit(lambda m: m.sum(), out_shardings=parallel.replicated(parallel.mesh()))(g["mask"]))
    if pid == 0:
      np.savez(out, images=np.stack(images), labels=np.stack(labels), count=count)
    jax.distributed.shutdown()
""")


def config():
  from configs import default
  c = default.get_config()
  c.dataset.name = "synthetic"
  c.dataset.synthetic.update(num_train=40, num_eval=21, image_shape=(6, 6, 3), num_classes=7)
  c.dataset.image_size = 6
  c.dataset.augment = "pad_crop_flip"
  c.batch_size = 8
  c.eval_batch_size = 8
  return c


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.multiprocess
@pytest.mark.slow
def test_two_processes_build_the_single_process_global_batches(tmp_path):
  from cnnjax import data
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  port, out = _free_port(), str(tmp_path / "out.npz")
  env = dict(os.environ, PYTHONPATH=root, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(port), str(i), out], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
  logs = [p.communicate(timeout=240)[0] for p in procs]
  assert all(p.returncode == 0 for p in procs), "\n".join(logs)[-4000:]
  got = np.load(out)
  c = config()
  src, info = data.get_source(c.dataset, "train")
  it = iter(data.train_dataset(c, src, info))
  for k in range(3):
    one = next(it)
    # Process p holds stream positions p, p+2, ...: the global array is the even positions, then the odd.
    order = np.r_[0:8:2, 1:8:2]
    np.testing.assert_array_equal(got["images"][k], one["image"][order])
    np.testing.assert_array_equal(got["labels"][k], one["label"][order])
  assert int(got["count"]) == 21
