"""The model zoo. Importing this package registers every family; look models up with `create(name, ...)`."""
from cnnjax.models import resnet  # noqa: F401  (registers resnet*)
from cnnjax.models.registry import create, names, options

__all__ = ["create", "names", "options"]
