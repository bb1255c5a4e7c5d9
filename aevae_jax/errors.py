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


def int_list(text: str, flag: str, example: str, minimum: int) -> tuple[int, ...]:
    """'16,8' -> (16, 8) for an option given as integers separated by commas, each at
    least `minimum`; `flag` and `example` name the option and a valid value in the error."""
    try:
        values = tuple(int(v) for v in str(text).split(","))
    except ValueError:
        msg = f"{flag} must be integers separated by commas, e.g. {example}; got {text!r}"
        raise UserError(msg) from None
    require(min(values) >= minimum, f"{flag} must each be at least {minimum}, got {text!r}")
    return values
