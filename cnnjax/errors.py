"""Every exception the package raises on purpose, in one place (imported by all, importing nothing of cnnjax).

The rule: a user's mistake (a config value, a name, an option, a command-line argument, a file or data set the
config points at) is a `ConfigError` whose message names the field or name, the value and what is allowed;
entry points print it without a traceback and exit with status 2. A programming error (a function called
wrongly from code) stays a plain ValueError / TypeError with its traceback. The other classes are states of
a run that entry points report in one line with their own exit status (experiments/main.py).
"""
import signal


class ConfigError(ValueError):
  """A value that is not allowed, raised before anything compiles; entry points print it and exit 2.

  The message names the field or name, the value and what is allowed.
  """


class IdxError(ConfigError):
  """An IDX file (MNIST's format) that is not well formed, naming the file; a ConfigError to entry points."""


class BadFileError(ConfigError):
  """A data file that is not well formed (an image in a folder, a sentence file's line, a word-vectors file, a
  prepared copy's example), naming it and where; a ConfigError to entry points."""


class NotPreparedError(FileNotFoundError, ConfigError):
  """A data set found in none of the places it is looked for; its message (cnnjax.data.base.not_prepared) names
  them and the command that prepares it. A ConfigError to entry points."""


DataNotFoundError = NotPreparedError   # its former name (one error for every data set that is not there)


class BadExampleError(ValueError):
  """An example whose image or label does not fit its data set (in the pipeline, mid-run); a traceback."""


class RestoreError(RuntimeError):
  """A checkpoint unreadable for a reason other than damage to its files (nothing renamed); exit 1."""


class WorkdirBusyError(RuntimeError):
  """Another live process holds the workdir's lock; main exits with status 4 (EXIT_BUSY)."""


class NonFiniteError(RuntimeError):
  """The loss or gradients went NaN/Inf (on_nonfinite='stop', or too many skips in a row); exit 1."""


class Preempted(Exception):
  """A SIGTERM/SIGINT stopped the run after the checkpoint at `step` was saved; main exits 75 (run it again)."""

  def __init__(self, step: int, signum: int):
    super().__init__(f"stopped by signal {signal.Signals(signum).name} at step {step}; checkpoint saved. "
                     f"Run the same command again to resume.")
    self.step, self.signum = step, signum
