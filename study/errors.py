"""The one error type shown to users: a one-line message, exit code 2, no traceback."""


class UserError(Exception):
    """Bad input from the user (config, spec, CLI argument, file). Printed as one line, exit 2."""

    exit_code = 2

    def __init__(self, message: str):
        # user text quoted in a message (a key, a path) must not break the one-line promise
        super().__init__(message.replace("\r", "\\r").replace("\n", "\\n"))
