"""The one error type users see: a message that says what went wrong and how to fix it."""


class RagError(Exception):
    """A problem the user can fix; the message says how."""
