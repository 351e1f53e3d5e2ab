"""The strict-load check: a state dict's names and shapes against the ones a model expects."""


def _first(names, n=5):
    return f'{names[:n]}{"..." if len(names) > n else ""} ({len(names)})'


def check_strict(expected, got, what):
    """Raise unless ``got`` has exactly the names and shapes of ``expected`` (both ``{name: shape}``).

    ``KeyError`` naming the missing and the unexpected names, else ``ValueError`` naming the
    first misshapen one; the message is one line starting with ``what``.
    """
    missing, unexpected = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    if missing or unexpected:
        raise KeyError(f'{what}: missing keys {_first(missing)}, unexpected keys {_first(unexpected)}')
    misshapen = [k for k, shape in expected.items() if tuple(got[k]) != tuple(shape)]
    if misshapen:
        k = misshapen[0]
        more = f' (and {len(misshapen) - 1} more)' if len(misshapen) > 1 else ''
        raise ValueError(f'{what}: {k} has shape {tuple(got[k])}, expected {tuple(expected[k])}{more}')
