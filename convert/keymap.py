"""The declarative key map between checkpoint layouts; both directions use the same rules.

A rule is a pair of templates, ``(left, right)``. ``{ln}`` stands for a LayerNorm module
path (its last component starts with ``norm``), ``{i}`` for a block index and ``{rest}``
for any dotted tail. ``KeyMap.forward`` maps left names to right names, ``backward`` the
reverse; a name no rule matches is kept as it is.
"""
import re

_PLACEHOLDERS = {
    'ln': r'(?:[^.]+\.)*norm[^.]*',
    'i': r'\d+',
    'rest': r'.+',
}


def _regex(template):
    parts = re.split(r'\{(\w+)\}', template)
    out = []
    for n, part in enumerate(parts):
        out.append(f'(?P<{part}>{_PLACEHOLDERS[part]})' if n % 2 else re.escape(part))
    return re.compile(''.join(out))


class KeyMap:
    """Ordered renaming rules between two layouts; the first matching rule wins."""

    def __init__(self, rules):
        self.rules = tuple(rules)
        self._left = [(_regex(a), b) for a, b in self.rules]
        self._right = [(_regex(b), a) for a, b in self.rules]

    @staticmethod
    def _apply(compiled, key):
        for regex, template in compiled:
            m = regex.fullmatch(key)
            if m:
                return template.format(**m.groupdict())
        return key

    def forward(self, key):
        return self._apply(self._left, key)

    def backward(self, key):
        return self._apply(self._right, key)


# timm (PyTorch) names <-> mindspore_tnt parameter names.
TIMM_TO_MINDSPORE = KeyMap([
    ('{ln}.weight', '{ln}.gamma'),
    ('{ln}.bias', '{ln}.beta'),
])
