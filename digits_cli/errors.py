"""The exception for user mistakes: the CLI prints its message on one line, no traceback."""


class DigitsError(Exception):
    """A problem the user can fix: a missing file, a bad value, missing data."""
