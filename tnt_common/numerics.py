"""The numerics of a TNT: GELU form and LayerNorm epsilons, part of the model's function.

The same weights compute different functions under different numerics, and the
checkpoint families were trained under different ones (docs/convert.md, "Families"):

| preset | GELU | eps, blocks and stem | eps, final norm | whose |
|---|---|---|---|---|
| ``pytorch`` | erf | 1e-5 | 1e-5 | timm, official Huawei, mmpretrain, ours by default |
| ``mindcv`` | tanh | 1e-5 | 1e-7 | MindCV ``tnt_small`` / ``tnt_base`` |
| ``zoo`` | tanh | 1e-7 | 1e-7 | MindSpore model zoo ``research/cv/TNT`` |

Both ``torch_ref`` and ``mindspore_tnt`` build any of them (``Numerics.model_kwargs``); a
converted file carries them (``to_json``), so loading it rebuilds the same function.
"""
import json
from dataclasses import asdict, dataclass

GELU_FORMS = ('erf', 'tanh')


@dataclass(frozen=True)
class Numerics:
    """GELU form (``'erf'`` exact or ``'tanh'`` approximation) and LayerNorm epsilons."""
    gelu: str = 'erf'
    norm_eps: float = 1e-5        # every LayerNorm but the final one
    final_norm_eps: float = 1e-5  # the final ``norm`` before the head

    def __post_init__(self):
        if self.gelu not in GELU_FORMS:
            raise ValueError(f'unknown GELU form {self.gelu!r}; choose erf or tanh')
        for name in ('norm_eps', 'final_norm_eps'):
            eps = getattr(self, name)
            if not isinstance(eps, (int, float)) or not 0 < eps < 1:
                raise ValueError(f'{name} must be a number in (0, 1), got {eps!r}')

    def model_kwargs(self):
        """Constructor arguments of ``TNT`` in either framework."""
        return asdict(self)

    def to_json(self):
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text):
        try:
            d = json.loads(text)
            return cls(gelu=d['gelu'], norm_eps=float(d['norm_eps']), final_norm_eps=float(d['final_norm_eps']))
        except (ValueError, TypeError, KeyError) as e:
            raise ValueError(f'unreadable numerics {text!r}: {e}') from None

    @property
    def name(self):
        """The preset's name, or a spelled-out form."""
        for k, v in PRESETS.items():
            if v == self:
                return k
        return f'gelu={self.gelu},norm_eps={self.norm_eps:g},final_norm_eps={self.final_norm_eps:g}'

    def describe(self):
        return (f'{self.name} (GELU {self.gelu}, LayerNorm eps {self.norm_eps:g}, '
                f'final norm eps {self.final_norm_eps:g})')


PYTORCH = Numerics()
PRESETS = {
    'pytorch': PYTORCH,
    'mindcv': Numerics(gelu='tanh', norm_eps=1e-5, final_norm_eps=1e-7),
    'zoo': Numerics(gelu='tanh', norm_eps=1e-7, final_norm_eps=1e-7),
}


def parse(text):
    """A preset name, or ``gelu=tanh,norm_eps=1e-7,final_norm_eps=1e-7`` (missing keys: PyTorch's)."""
    if isinstance(text, Numerics):
        return text
    if text in PRESETS:
        return PRESETS[text]
    expected = f'numerics {text!r}: a preset ({", ".join(PRESETS)}) or gelu=erf|tanh,norm_eps=X,final_norm_eps=Y'
    parts = [part.split('=', 1) for part in text.split(',')]
    if any(len(p) != 2 for p in parts):
        raise ValueError(expected)
    unknown = [k.strip() for k, _ in parts if k.strip() not in Numerics.__dataclass_fields__]
    if unknown:
        raise ValueError(f'{expected} (unknown key {unknown[0]!r})')
    try:
        return Numerics(**{k.strip(): (v.strip() if k.strip() == 'gelu' else float(v)) for k, v in parts})
    except (ValueError, TypeError) as e:
        raise ValueError(f'{expected} ({e})') from None
