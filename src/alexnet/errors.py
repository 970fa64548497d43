"""The one exception type the command line turns into a one-line message."""


class AlexNetError(Exception):
    """A problem with the user's input (path, flag, file): printed as one line, no traceback."""


def one_line(error: AlexNetError) -> str:
    """The error's own message. Raised in a DataLoader worker, it comes back with the worker's
    traceback prepended ("Caught AlexNetError in DataLoader worker process 0. Original
    Traceback ..."): its last line is the message."""
    text = str(error)
    if text.startswith("Caught ") and "Original Traceback" in text:
        text = text.rstrip().splitlines()[-1].split(": ", 1)[-1]
    return text
