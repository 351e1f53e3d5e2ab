"""MindSpore ``.ckpt`` files, read and written without importing MindSpore.

A ``.ckpt`` is a sequence of protobuf ``Checkpoint`` messages (MindSpore's
``checkpoint.proto``): ``Checkpoint { repeated Value value = 1 }``,
``Value { string tag = 1; TensorProto tensor = 2; MapTensorProto maptensor = 3 }``,
``TensorProto { repeated int64 dims = 1; string tensor_type = 2; bytes tensor_content = 3 }``.
A large tensor may be split over several values with the same tag; an optional trailer
``b'crc_num' + crc32 (10 bytes, big endian)`` closes the file. Reading maps the file and
returns arrays that view it, writing streams one tensor at a time.
"""
import binascii
import mmap

import numpy as np

from convert.dtypes import from_bf16_bits
from convert.errors import ConversionError

NP_TYPES = {'Float32': np.float32, 'Float16': np.float16, 'Float64': np.float64,
            'Int8': np.int8, 'UInt8': np.uint8, 'Int16': np.int16, 'UInt16': np.uint16,
            'Int32': np.int32, 'UInt32': np.uint32, 'Int64': np.int64, 'UInt64': np.uint64,
            'Bool': np.bool_}
TYPE_NAMES = {'fp32': 'Float32', 'fp16': 'Float16', 'bf16': 'BFloat16', 'int32': 'Int32',
              'int64': 'Int64'}
CRC_TRAILER = b'crc_num'


class _Corrupt(Exception):
    pass


def _varint(buf, pos, end):
    result = shift = 0
    while True:
        if pos >= end:
            raise _Corrupt('truncated varint')
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise _Corrupt('varint too long')


def _fields(buf, pos, end):
    """Yield (field number, wire type, value or (start, stop)) of one message."""
    while pos < end:
        key, pos = _varint(buf, pos, end)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            yield field, wire, value
        elif wire == 2:
            n, pos = _varint(buf, pos, end)
            if pos + n > end:
                raise _Corrupt('length runs past the end')
            yield field, wire, (pos, pos + n)
            pos += n
        else:
            raise _Corrupt(f'unexpected wire type {wire}')


def _tensor(buf, start, stop):
    dims, type_name, content = [], None, None
    for field, wire, v in _fields(buf, start, stop):
        if field == 1 and wire == 0:
            dims.append(v)
        elif field == 1:
            pos, end = v
            while pos < end:
                d, pos = _varint(buf, pos, end)
                dims.append(d)
        elif field == 2 and wire == 2:
            type_name = bytes(buf[v[0]:v[1]]).decode()
        elif field == 3 and wire == 2:
            content = v
        else:
            raise _Corrupt(f'unexpected tensor field {field}')
    if type_name is None or content is None:
        raise _Corrupt('tensor without type or content')
    return tuple(dims), type_name, content


def _array(buf, dims, type_name, parts):
    if type_name == 'str':  # MindSpore stores strings as UTF-32 code units
        return b''.join(bytes(buf[a:b]) for a, b in parts).decode('utf-32-le')
    bf16 = type_name == 'BFloat16'
    if not bf16 and type_name not in NP_TYPES:
        raise ConversionError(f'unsupported MindSpore tensor type {type_name!r}')
    dtype = np.dtype(np.uint16 if bf16 else NP_TYPES[type_name])
    if any((b - a) % dtype.itemsize for a, b in parts):
        raise _Corrupt(f'{type_name} content of a length not a multiple of {dtype.itemsize} bytes')
    chunks = [np.frombuffer(buf[a:b], dtype) for a, b in parts]
    flat = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
    if flat.size != int(np.prod(dims)):
        raise _Corrupt(f'{flat.size} values for shape {dims}')
    flat = flat.reshape(dims)
    return from_bf16_bits(flat) if bf16 else flat


def read(path):
    """``{name: array}`` of a ``.ckpt`` file (arrays view the mapped file)."""
    with open(path, 'rb') as f:
        buf = memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
    end = len(buf)
    if end >= 17 and bytes(buf[end - 17:end - 10]) == CRC_TRAILER:
        end -= 17
        if binascii.crc32(buf[:end]) != int.from_bytes(buf[end + 7:end + 17], 'big'):
            raise ConversionError('MindSpore checkpoint CRC mismatch: the file is corrupt')
    tensors = {}
    try:
        for field, wire, (start, stop) in _fields(buf, 0, end):
            if field != 1 or wire != 2:
                raise _Corrupt(f'unexpected top-level field {field}')
            tag, tensor = None, None
            for f2, w2, v in _fields(buf, start, stop):
                if f2 == 1 and w2 == 2:
                    tag = bytes(buf[v[0]:v[1]]).decode()
                elif f2 == 2 and w2 == 2:
                    tensor = _tensor(buf, *v)
                elif f2 == 3:
                    raise ConversionError('MindSpore checkpoint holds a map tensor: not a TNT checkpoint')
                else:
                    raise _Corrupt(f'unexpected value field {f2}')
            if tag is None or tensor is None:
                raise _Corrupt('value without tag or tensor')
            dims, type_name, content = tensor
            entry = tensors.setdefault(tag, [dims, type_name, []])
            entry[2].append(content)
        if not tensors:
            raise _Corrupt('no tensors')
        return {tag: _array(buf, dims, t, parts) for tag, (dims, t, parts) in tensors.items()}
    except (_Corrupt, UnicodeDecodeError) as e:
        raise ConversionError(f'not a readable MindSpore checkpoint (truncated, encrypted or '
                              f'corrupt: {e})') from None


def _key(field, wire):
    return _encode_varint(field << 3 | wire)


def _encode_varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _len_field(field, payload_len):
    return _key(field, 2) + _encode_varint(payload_len)


def write_string(f, name, text):
    """Append a string entry, as ``ms.save_checkpoint(append_dict=...)`` stores one."""
    content = text.encode('utf-32-le')
    tag, type_name = name.encode(), b'str'
    tensor_head = _key(1, 0) + _encode_varint(0) + _len_field(2, len(type_name)) + type_name
    tensor_head += _len_field(3, len(content))
    tensor_len = len(tensor_head) + len(content)
    value_head = _len_field(1, len(tag)) + tag + _len_field(2, tensor_len)
    f.write(_len_field(1, len(value_head) + tensor_len) + value_head + tensor_head + content)


def write_tensor(f, name, array, dtype_name):
    """Append one tensor to an open ``.ckpt`` file; ``array`` holds the bytes to store."""
    content = memoryview(np.ascontiguousarray(array)).cast('B')
    tag = name.encode()
    type_name = TYPE_NAMES[dtype_name].encode()
    tensor_head = b''.join(_key(1, 0) + _encode_varint(d) for d in array.shape)
    tensor_head += _len_field(2, len(type_name)) + type_name + _len_field(3, len(content))
    tensor_len = len(tensor_head) + len(content)
    value_head = _len_field(1, len(tag)) + tag + _len_field(2, tensor_len)
    f.write(_len_field(1, len(value_head) + tensor_len) + value_head + tensor_head)
    f.write(content)
