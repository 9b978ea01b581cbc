"""The one error type for bad input: its message is shown to the user as is.

The CLI prints it on one line to stderr and exits with code 2; the server turns it
into an error reply and keeps serving. Anything else that escapes is a bug.
"""


class UserError(Exception):
    """Bad input or an unusable environment, described in one line for a person."""
