"""The one base class for errors whose message is written for the person using the app or CLI.

Each module raises its own subclass (ImageError, DataError, CheckpointError, TrainingError,
ArchiveError); callers that only show the message catch `UserError` once.
"""


class UserError(Exception):
    """A problem the user can act on; `str(exc)` is the whole message, no traceback needed."""


class DataError(UserError, RuntimeError):
    """A data set that cannot be loaded; the message says what to do about it."""
