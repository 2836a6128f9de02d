"""The one exception type a user sees.

Anything that is the user's fault (a missing file, a bad flag, a foreign character, a corrupt
checkpoint) raises :class:`CharlmError` with a message that fits on one line.  The CLI turns it
into ``Error: <message>`` and exit status 1; Python callers can catch it like any exception.
"""


class CharlmError(Exception):
    """A problem with the user's input or environment, explained in one line."""
