"""absl command lines that also run as functions.

`python -m <module> --flag v` goes through `program`: absl's `app.run` over the global FLAGS, so `--help` and
`--helpfull` list the command's flags under its docstring. `<module>.main(["--flag", "v"])` goes through `call`:
the same flags parsed into a fresh flag set, so calling a command from Python (tests, notebooks) never defines
flags in absl's global FLAGS, and two commands with a flag of the same name can be imported side by side.
Each command is `define(flag_values) -> flag_values` plus `body(values, positional_args)`.
"""
import sys
import types
from typing import Any, Callable, List, Optional, Sequence

from absl import app, flags

Define = Callable[[flags.FlagValues], flags.FlagValues]
Body = Callable[[types.SimpleNamespace, List[str]], Any]


def values(fv: flags.FlagValues) -> types.SimpleNamespace:
  """The parsed flags as attributes (`--input_shape` and its alias `--input-shape` both as `input_shape`)."""
  return types.SimpleNamespace(**{k.replace("-", "_"): v for k, v in fv.flag_values_dict().items()})


def call(define: Define, body: Body, argv: Optional[Sequence[str]] = None):
  """Parses `argv` (without the program name; default sys.argv[1:]) with the command's own flags and runs it.
  A flag error exits with status 2 and the message, as argparse did."""
  fv = define(flags.FlagValues())
  try:
    rest = fv([sys.argv[0], *(sys.argv[1:] if argv is None else argv)])
  except flags.Error as e:
    sys.stderr.write(f"error: {e}\n")
    raise SystemExit(2) from None
  return body(values(fv), rest[1:])


def program(define: Define, body: Body) -> None:
  """The `if __name__ == "__main__"` entry: the flags on absl's global FLAGS, run by `app.run`, its return value
  the exit status."""
  define(flags.FLAGS)
  app.run(lambda argv: body(values(flags.FLAGS), argv[1:]))
