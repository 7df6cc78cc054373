"""cnnjax: convolutional networks in JAX/Flax.

Importing the package changes nothing global. The project's CPU XLA flags are set by its entry points
(experiments.main, experiments.sweep, benchmarks, tests) with `cnnjax.layers.cpu_fast.set_xla_flags()`, which a
library user calls the same way before JAX starts a backend (docs/guide/cpu_speed.md).
"""
__version__ = "0.1.0"
