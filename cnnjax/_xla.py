"""XLA flags the project sets for CPU, before JAX initialises its backends.

jax 0.10's default CPU path for dots and convolutions is YNNPACK; on the 2-core x86 machines we measured it
1.55x slower for a ResNet-18 CIFAR train step than XLA's Eigen path, and several conv shapes ran on one core
(benchmarks/RESULTS.md). `--xla_cpu_experimental_ynn_fusion_type=` switches YNNPACK fusions off. The flag only
affects the CPU backend, so GPU and TPU runs are unchanged. A user's own XLA_FLAGS that mention the flag win;
`CNNJAX_KEEP_XLA_FLAGS=1` leaves XLA_FLAGS untouched.
"""
import os

CPU_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=",)


def _apply() -> None:
  if os.environ.get("CNNJAX_KEEP_XLA_FLAGS") == "1":
    return
  flags = os.environ.get("XLA_FLAGS", "")
  for flag in CPU_FLAGS:
    name = flag.split("=")[0]
    if name not in flags:
      flags = (flags + " " + flag).strip()
  os.environ["XLA_FLAGS"] = flags


_apply()
