"""The prepared GPU check runs here as a dry run (CPU, small shapes), so it cannot rot between GPU slots."""
import os
import subprocess
import sys

import pytest

from tests import helpers


@pytest.mark.slow   # about a minute: two small compilations, a 4-step run, pytest in a subprocess
def test_device_check_dry_run_writes_every_section(tmp_path):
  """Every section of the report is written and none failed: the versions, the JAX-vs-PyTorch table in both
  precisions (with the parameter counts asserted equal inside), the input rates, the default run with its
  input_wait and the conv_impl resolution, and the GPU tests skipped with their reason. Catches a script broken
  by a change elsewhere (a renamed metric, a benchmark function's signature, a test file moved)."""
  out = tmp_path / "report.md"
  env = {**helpers.env(1), "JAX_COMPILATION_CACHE_DIR": helpers.CACHE}
  r = subprocess.run([sys.executable, "-m", "benchmarks.device_check", "--dry-run", "--out", str(out)],
                     cwd=helpers.ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert r.returncode == 0, r.stderr[-3000:]
  report = out.read_text()
  assert "**failed**" not in report and "skipped:" not in report, report
  for title in ("## Versions", "## Train step: JAX vs PyTorch", "## Input pipeline", "## Default run (short)",
                "## GPU tests"):
    assert title in report, title
  for row in ("| jax float32 |", "| jax bfloat16 |", "| torch eager float32 |", "| torch eager bf16 autocast |"):
    assert row in report, row
  assert "backend cpu: 1 x cpu" in report and "modules missing:" in report
  assert "examples/s" in report and "input_wait" in report
  assert "conv_impl 'auto' resolved on backend cpu to:" in report
  assert "4 skipped" in report and os.path.isfile(out)
