"""The dtypes a compiled MindSpore graph really computes, read from its IR dump.

``trace_dtypes`` compiles a Cell in GRAPH mode with IR saving switched on and parses the
validated front-end IR: the graph after type inference and the AMP casts, before a
backend adds casts of its own (the CPU backend runs an fp16 MatMul as fp32 between
casts; Ascend runs it in fp16). Each primitive call comes with its input and output
dtypes and its source call stack. ``precision_roles`` sorts the calls, by the source
they come from, into the roles an AMP level promises something about.
"""
import glob
import inspect
import os
import re
import tempfile

_ANY_NODE = re.compile(r'^\s+%\d+\(')
_NODE = re.compile(r'^\s+%\d+\([^)]*\) = (?:PrimFunc_(\w+)|(Custom|Conv2D))\(')
_TYPES = re.compile(r'^\s+: \((.*)\) -> \((.*)\)\s*$')
_FRAME = re.compile(r'# In file (.+?):(\d+)')
_DTYPE = re.compile(r'Tensor\[(\w+)\]')

MATMULS = frozenset({'MatMul', 'MatMulExt', 'BatchMatMul', 'BatchMatMulExt', 'Dense'})
ROLES = ('embed_proj', 'dense_matmul', 'attention_matmul', 'layernorm', 'softmax', 'gelu', 'residual_add')
CONVS = frozenset({'Conv2D', 'Conv2DExt', 'Convolution'})


def parse_ir(text):
    """``[{op, inputs: [dtype], outputs: [dtype], frames: [(file, line)]}]`` of each primitive call.

    ``frames`` is the source call stack of the call, outermost first.
    """
    calls, current = [], None
    for line in text.splitlines():
        if _ANY_NODE.match(line):
            m = _NODE.match(line)
            current = dict(op=m.group(1) or m.group(2), inputs=[], outputs=[], frames=[]) if m else None
            if current:
                calls.append(current)
        elif current is not None:
            t = _TYPES.match(line)
            if t and not current['outputs']:
                current['inputs'] = _DTYPE.findall(t.group(1))
                current['outputs'] = _DTYPE.findall(t.group(2))
            f = _FRAME.search(line)
            if f:
                current['frames'].append((os.path.realpath(f.group(1)), int(f.group(2))))
    return calls


def trace_dtypes(cell, *inputs):
    """Compile and run ``cell(*inputs)`` in GRAPH mode; return ``parse_ir`` of its graph."""
    import mindspore as ms
    previous = ms.get_context('mode')
    with tempfile.TemporaryDirectory(prefix='tnt_ir_') as ir_dir:
        passes = os.environ.get('MS_DEV_DUMP_IR_PASSES')
        os.environ['MS_DEV_DUMP_IR_PASSES'] = 'validate'   # the one dump read: half the compile time
        ms.set_context(mode=ms.GRAPH_MODE, save_graphs=1, save_graphs_path=ir_dir)
        try:
            cell(*inputs)
        finally:
            ms.set_context(mode=previous, save_graphs=0)
            if passes is None:
                del os.environ['MS_DEV_DUMP_IR_PASSES']
            else:
                os.environ['MS_DEV_DUMP_IR_PASSES'] = passes
        dumps = sorted(glob.glob(os.path.join(ir_dir, '*_validate_*.ir')), key=os.path.getmtime)
        if not dumps:
            raise RuntimeError('MindSpore wrote no validated IR: cannot read the computed dtypes')
        with open(dumps[-1]) as f:
            return parse_ir(f.read())


def _source_span(func):
    """(real file, first line, last line) of a function's source."""
    lines, start = inspect.getsourcelines(func)
    return os.path.realpath(inspect.getsourcefile(func)), start, start + len(lines) - 1


def _inside(frames, span):
    path, first, last = span
    return any(f == path and first <= n <= last for f, n in frames)


def precision_roles(calls):
    """``{role: [call]}`` for the roles an AMP level is judged on (see ``ROLES``).

    embed_proj: the pixel embedding's convolution, or its matmul with ``impl='cpu'``;
    dense_matmul: the matmul of an ``nn.Dense`` (``mindspore_tnt.dense.Dense`` included);
    attention_matmul: a matmul of ``Attention.construct`` itself (q·kᵀ and attn·v), or the
    ``Custom`` op of ``mindspore_tnt.attention.SmallHeadAttention``'s CPU kernel (judged on its
    projections in and its output, in this role and in softmax's); layernorm: MindSpore's LayerNorm op, or
    the ``Custom`` op of ``mindspore_tnt.layernorm.LayerNorm``'s CPU kernel; softmax: MindSpore's Softmax op,
    or the ``Custom`` op of ``mindspore_tnt.softmax``'s CPU kernel; gelu: every op
    of an ``nn.GELU`` or of ``mindspore_tnt.gelu.GELU`` (its CPU kernel is a ``Custom``
    op), or the ``Custom`` op called by ``Mlp.fc1_act`` itself (fc1's bias add and the GELU in
    one kernel); residual_add: an ``Add`` written in ``Block.construct`` itself.
    """
    from mindspore import nn
    from mindspore_tnt import (attention as tnt_attention, dense as tnt_dense, gelu as tnt_gelu,
                               layernorm as tnt_layernorm, softmax as tnt_softmax, tnt)
    denses = (_source_span(nn.Dense.construct), _source_span(tnt_dense.Dense.construct),
              _source_span(tnt_dense.Dense.product))
    attention_kernel = _source_span(tnt_attention.SmallHeadAttention.construct)
    layernorm = _source_span(tnt_layernorm.LayerNorm.construct)
    softmax = _source_span(tnt_softmax.softmax)
    gelus = (_source_span(nn.GELU.construct), _source_span(tnt_gelu.GELU.construct))
    fused_gelu = _source_span(tnt.Mlp.fc1_act)
    attention, block = _source_span(tnt.Attention.construct), _source_span(tnt.Block.construct)
    embed = (_source_span(tnt.PixelEmbed.construct), _source_span(tnt.PixelEmbed.gather_taps))
    model_file = block[0]
    roles = {k: [] for k in ROLES}
    for c in calls:
        frames, op = c['frames'], c['op']
        own = [fr for fr in frames if fr[0] == model_file]
        innermost = own[-1:] if own else []
        if op == 'Custom' and _inside(frames, attention_kernel):
            roles['attention_matmul'].append(dict(c, inputs=c['inputs'][:2]))
            roles['softmax'].append(dict(c, inputs=c['inputs'][:2]))
        elif op in MATMULS | CONVS and any(_inside(innermost, span) for span in embed):
            roles['embed_proj'].append(c)
        elif op in MATMULS and any(_inside(frames, span) for span in denses):
            roles['dense_matmul'].append(c)
        elif op in MATMULS and _inside(innermost, attention):
            roles['attention_matmul'].append(c)
        elif op in ('LayerNorm', 'LayerNormExt') or op == 'Custom' and _inside(frames, layernorm):
            roles['layernorm'].append(c)
        elif op == 'Softmax' or op == 'Custom' and _inside(frames, softmax):
            roles['softmax'].append(c)
        elif (op != 'Cast' and any(_inside(frames, span) for span in gelus)
              or op == 'Custom' and _inside(frames[-1:], fused_gelu)):
            roles['gelu'].append(c)
        elif op == 'Add' and _inside(innermost, block):
            roles['residual_add'].append(c)
    return roles


def role_dtypes(calls):
    """``{role: sorted dtypes its calls read and write}``; an empty list: no such call found."""
    return {role: sorted({d for c in cs for d in c['inputs'] + c['outputs']})
            for role, cs in precision_roles(calls).items()}
