"""The one exception type user-facing commands raise for bad input.

The CLI prints its message (which names the cause and the fix) and exits non-zero; library users can
catch it to tell a user's mistake from a bug.
"""


class TextVAEError(Exception):
    """Bad input, missing files, corrupt data or invalid configuration, with a message for a person."""
