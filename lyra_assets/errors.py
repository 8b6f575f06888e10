"""The one error type users see: a message that says what went wrong and what to do."""


class LyraAssetsError(Exception):
    """Bad input or a missing requirement. The CLI prints the message without a traceback and exits 2."""
