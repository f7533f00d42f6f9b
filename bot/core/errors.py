"""Exceptions shared across layers."""


class RetryLater(Exception):
    """Raised by a handler (or the GitHub client) to be retried no earlier than `after` seconds."""

    def __init__(self, message: str, after: float):
        super().__init__(message)
        self.after = after
