"""cnnjax: convolutional networks in JAX/Flax.

Importing the package sets the project's CPU XLA flags (see `cnnjax._xla`) before JAX starts its backend.
"""
from cnnjax import _xla  # noqa: F401  (must run before jax initialises a backend)

__version__ = "0.1.0"
