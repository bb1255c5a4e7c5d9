"""The one exception type a user sees: a mistake in their input, with its remedy.

Every check of user input (configuration, data files, command-line values, paths)
raises `UserError`; the command line prints its message and exits with status 2,
never a traceback. Errors of the library itself stay ordinary exceptions.
"""


class UserError(ValueError):
    """Bad input from the user; the message says what is wrong and how to fix it."""


def require(condition: bool, message: str) -> None:
    """Raise `UserError(message)` unless `condition` holds."""
    if not condition:
        raise UserError(message)
