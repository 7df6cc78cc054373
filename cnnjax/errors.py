"""The project's user-facing error: bad config values, names and options."""


class ConfigError(ValueError):
  """A value that is not allowed; the message names the field or name, the value and what is allowed.

  Entry points print it without a traceback.
  """
