"""The one exception type the command line turns into a one-line message."""


class AlexNetError(Exception):
    """A problem with the user's input (path, flag, file): printed as one line, no traceback."""
