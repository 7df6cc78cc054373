"""Every exception class lives in cnnjax/errors.py; the modules that used to define them give the same objects, so
`except old_module.X` still catches what the package raises."""
import inspect

import pytest

from cnnjax import checkpoint, data, errors, workdir
from cnnjax.data import base, folder, idx, sources, transforms
from cnnjax.train import loop

OLD_HOMES = [(loop, "Preempted"), (loop, "NonFiniteError"), (checkpoint, "RestoreError"), (idx, "IdxError"),
             (base, "NotPreparedError"), (transforms, "BadExampleError"), (sources, "DataNotFoundError"),
             (sources, "NotPreparedError"), (sources, "BadExampleError"), (folder, "BadFileError"),
             (workdir, "WorkdirBusyError"), (data, "NotPreparedError"), (data, "BadExampleError")]


@pytest.mark.parametrize("module, name", OLD_HOMES, ids=[f"{m.__name__}.{n}" for m, n in OLD_HOMES])
def test_old_names_are_the_classes_of_cnnjax_errors(module, name):
  assert getattr(module, name) is getattr(errors, name)


def test_every_class_is_defined_in_errors_and_documented():
  classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if c.__module__ == "cnnjax.errors"]
  assert len(classes) == 10 and all(c.__doc__ and c.__doc__.strip() for c in classes)
  for module in (loop, checkpoint, idx, base, transforms, sources, folder, workdir):
    own = [n for n, c in inspect.getmembers(module, inspect.isclass)
           if issubclass(c, BaseException) and c.__module__ == module.__name__]
    assert own == [], f"{module.__name__} defines {own}: exceptions belong in cnnjax/errors.py"


def test_user_mistakes_are_config_errors_and_runtime_states_are_not():
  for name in ("IdxError", "BadFileError", "NotPreparedError", "DataNotFoundError"):
    assert issubclass(getattr(errors, name), errors.ConfigError), name
  assert issubclass(errors.NotPreparedError, FileNotFoundError)  # still caught as a missing file
  for name in ("RestoreError", "WorkdirBusyError", "NonFiniteError", "Preempted", "BadExampleError"):
    assert not issubclass(getattr(errors, name), errors.ConfigError), name
  assert issubclass(errors.ConfigError, ValueError)
