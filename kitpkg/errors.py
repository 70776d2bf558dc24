"""The user-facing error: the CLI prints it as one line and exits non-zero."""


class KitError(ValueError):
    """Bad input or a refused action; the message names the file/column/option and what to do."""
