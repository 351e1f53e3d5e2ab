"""The one error type for bad user input: reported as a one-line message, exit status 2."""


class InputError(ValueError):
    """Bad command-line input, data, checkpoint or output folder."""
