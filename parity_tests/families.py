"""Checkpoint files of every TNT family, keyed from the layout descriptions (docs/convert.md).

Independent of ``convert.keymap``: each function here re-keys a timm-named state dict the
way that family's own code names its tensors, so the converter is tested against the
descriptions, not against itself.
"""
import numpy as np

OFFICIAL_TOP = {'pixel_embed': 'patch_embed', 'norm1_proj': 'proj_norm1', 'norm2_proj': 'proj_norm2'}
OFFICIAL_BLOCK = {'norm_in': 'inner_norm1', 'attn_in': 'inner_attn', 'norm_mlp_in': 'inner_norm2',
                  'mlp_in': 'inner_mlp', 'norm1_proj': 'proj_norm1', 'norm2_proj': 'proj_norm2',
                  'norm_out': 'outer_norm1', 'attn_out': 'outer_attn', 'norm_mlp': 'outer_norm2',
                  'mlp': 'outer_mlp'}
# Biases the model zoo TNT does not have, as regexes over timm names.
ZOO_ABSENT = (r'blocks\.\d+\.attn_(in|out)\.proj\.bias', r'blocks\.\d+\.mlp(_in)?\.fc2\.bias',
              r'pixel_embed\.proj\.bias', r'proj\.bias', r'head\.bias')
MM_BLOCK = {'norm_in': 'inner_block.norm_attn', 'attn_in': 'inner_block.attn.attn', 'norm_mlp_in': 'inner_block.norm_ffn',
            'norm_out': 'outer_block.norm_attn', 'attn_out': 'outer_block.attn.attn', 'norm_mlp': 'outer_block.norm_ffn',
            'norm1_proj': 'norm_proj', 'proj': 'projection'}


def inner_pos_of(pixel_pos):
    """``inner_pos[0, h*4 + w, c] = pixel_pos[0, c, h, w]``."""
    return np.stack([pixel_pos[0, :, h, w] for h in range(4) for w in range(4)])[None]


def _is_norm(key):
    return 'norm' in key.rsplit('.', 2)[-2] if key.count('.') else False


def mindspore_names(state):
    """LayerNorm ``weight``/``bias`` as MindSpore's ``gamma``/``beta``."""
    out = {}
    for k, v in state.items():
        if _is_norm(k):
            k = k[:k.rindex('.')] + {'weight': '.gamma', 'bias': '.beta'}[k.rsplit('.', 1)[1]]
        out[k] = v
    return out


def to_official(state, outer_tokens=True, inner_pos=inner_pos_of):
    """A timm state dict (numpy) re-keyed as the official code names it."""
    out = {}
    for k, v in state.items():
        parts = k.split('.')
        if k == 'patch_pos':
            out['outer_pos'] = v
        elif k == 'pixel_pos':
            out['inner_pos'] = inner_pos(v)
        else:
            if parts[0] == 'blocks':
                parts[2] = OFFICIAL_BLOCK.get(parts[2], parts[2])
            else:
                parts[0] = OFFICIAL_TOP.get(parts[0], parts[0])
            out['.'.join(parts)] = v
    if outer_tokens:
        out['outer_tokens'] = np.zeros_like(state['patch_pos'][:, 1:])
    return out


def to_mindcv(state):
    """MindCV ``tnt_small``/``tnt_base``: official names, MindSpore norms, no ``outer_tokens``."""
    return mindspore_names(to_official(state, outer_tokens=False))


def zoo_weights(state):
    """``state`` with the biases the zoo lacks set to zero (the function the zoo computes)."""
    import re
    return {k: np.zeros_like(v) if any(re.fullmatch(p, k) for p in ZOO_ABSENT) else v for k, v in state.items()}


def to_zoo(state):
    """MindSpore model zoo: MindCV's names, q and k apart, ``proj_norm2_tnt``, absent biases gone."""
    import re
    out = {}
    for k, v in to_mindcv(state).items():
        if any(re.fullmatch(p, k) for p in (r'blocks\.\d+\.(inner|outer)_attn\.proj\.bias',
                                              r'blocks\.\d+\.(inner|outer)_mlp\.fc2\.bias',
                                              r'patch_embed\.proj\.bias', r'proj\.bias', r'head\.bias')):
            assert not np.any(v), f'{k} is not zero: the zoo cannot hold it'
            continue
        if k.startswith('proj_norm2.'):
            k = 'proj_norm2_tnt.' + k.split('.', 1)[1]
        if k.endswith('_attn.qk.weight'):
            q, kk = np.split(v, 2)
            out[k.replace('.qk.', '.q.')], out[k.replace('.qk.', '.k.')] = q, kk
            continue
        out[k] = v
    return out


def to_mmpretrain(state):
    """mmpretrain's ``ImageClassifier`` state dict (legacy graph): backbone.*, head.fc.*."""
    out = {}
    for k, v in state.items():
        parts = k.split('.')
        if parts[0] == 'head':
            out['head.fc.' + parts[1]] = v
        elif parts[0] == 'proj':
            out['backbone.projection.' + parts[1]] = v
        elif parts[0] != 'blocks':
            out['backbone.' + k] = v
        elif parts[2] in ('attn_in', 'attn_out'):
            side = MM_BLOCK[parts[2]]
            if parts[3] == 'qk':
                out[f'backbone.layers.{parts[1]}.{side}.in_proj_weight'] = np.concatenate(
                    [v, state[k.replace('.qk.', '.v.')]])
            elif parts[3] == 'proj':
                out[f'backbone.layers.{parts[1]}.{side}.out_proj.{parts[4]}'] = v
        elif parts[2] in ('mlp_in', 'mlp'):
            side = 'inner_block' if parts[2] == 'mlp_in' else 'outer_block'
            layer = {'fc1': 'layers.0.0', 'fc2': 'layers.1'}[parts[3]]
            out[f'backbone.layers.{parts[1]}.{side}.ffn.{layer}.{parts[4]}'] = v
        else:
            out[f'backbone.layers.{parts[1]}.{MM_BLOCK[parts[2]]}.{parts[3]}'] = v
    return out


def small_outer_stream(weights, scale=1e-3):
    """Weights whose outer tokens reach the final norm with a variance near 1e-7, where its
    eps decides the output: every outer-stream contribution scaled down (the function's
    shape is the same, only the final norm's input is small)."""
    out = dict(weights)
    for k in out:
        if k in ('cls_token', 'patch_pos', 'norm2_proj.weight', 'norm2_proj.bias') or k.endswith(
                ('.norm2_proj.weight', '.norm2_proj.bias', 'attn_out.proj.weight', 'attn_out.proj.bias',
                 '.mlp.fc2.weight', '.mlp.fc2.bias')):
            out[k] = (out[k] * scale).astype(np.float32)
    return out
