"""Benchmarks (`python -m benchmarks.<name>`): the project's CPU XLA flags are set here, before JAX starts."""
from cnnjax.layers import cpu_fast

cpu_fast.set_xla_flags()
