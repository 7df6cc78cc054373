"""The model zoo. Importing this package registers every family; look models up with `create(name, ...)`."""
from cnnjax.models import alexnet, googlenet, kim_cnn, lenet, resnet, vgg  # noqa: F401  (each registers its names)
from cnnjax.models.registry import create, init_variables, names, options

__all__ = ["create", "init_variables", "names", "options"]
