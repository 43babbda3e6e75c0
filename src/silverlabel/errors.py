"""The one exception type users see.

Library code raises :class:`SilverlabelError` for anything the user can fix (a missing file, an unknown column,
a bad config value). The CLI turns it into one line on stderr and exit code 2; everything else is a bug and keeps
its traceback.
"""


class SilverlabelError(Exception):
    """A problem with the user's input, named precisely, with the fix in the message."""
