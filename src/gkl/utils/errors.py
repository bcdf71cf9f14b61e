"""Exception classes shared by every package.

The ``gkl`` command prints an :class:`InputError` as one line and exits with status 2;
any other exception is a bug in gkl and keeps its traceback.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input from the user (a config value, a file, a command-line argument).

    The message names the offending thing (dotted config key, file path, argument)
    and says what was expected.
    """


class ConfigError(InputError):
    """A configuration value or key is invalid; the message names the dotted key."""
