"""The converters' error: a one-line message about the user's input."""


class ConversionError(ValueError):
    """Bad or unsupported input; the message is one line and names what was found."""
