"""An ONNX model made faster for ONNX Runtime without changing one output bit: PRelu with a single slope
becomes LeakyRelu.

MONAI's U-Net exports its activations as PRelu with one learnt slope per layer (a (1, 1, 1) tensor).
ONNX Runtime's CPU PRelu broadcasts that slope element by element and was 31 % of the shipped ensemble's
network time (114 of 367 ms per slice pair, ORT profiling); its LeakyRelu kernel is vectorised. Both
operators are defined as `x if x >= 0 else slope * x`, and the slope's float32 bits become LeakyRelu's
float32 `alpha`, so the network's outputs are bit-identical (tested on the real slices and phantoms).

The rewrite works on the protobuf wire format directly, in memory: the `onnx` package is a training-only
dependency, and the model file (whose sha256 names the model) stays as shipped. Anything it does not
recognise (a slope of several values, a slope that is a graph input or used by another node, subgraphs)
is left as it is.
"""

from __future__ import annotations

# field numbers of onnx.proto
_MODEL_GRAPH = 7
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_INPUT, _GRAPH_OUTPUT = 1, 5, 11, 12
_NODE_INPUT, _NODE_OP_TYPE, _NODE_ATTRIBUTE, _NODE_DOMAIN = 1, 4, 5, 7
_ATTR_TYPE, _ATTR_GRAPH, _ATTR_GRAPHS = 20, 6, 11
_TENSOR_DIMS, _TENSOR_DATA_TYPE, _TENSOR_FLOAT_DATA, _TENSOR_NAME, _TENSOR_RAW_DATA = 1, 2, 4, 8, 9
_TENSOR_DATA_LOCATION = 14
_FLOAT = 1  # TensorProto.FLOAT and AttributeProto.FLOAT


def _varint(buf: memoryview | bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _fields(buf: memoryview) -> list[tuple[int, int, memoryview | int, memoryview]]:
    """A message's fields in order: (number, wire type, value, the field's own bytes), as views of `buf`."""
    out = []
    pos = 0
    while pos < len(buf):
        start = pos
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        value: memoryview | int
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        out.append((number, wire, value, buf[start:pos]))
    if pos != len(buf):
        raise ValueError("truncated protobuf message")
    return out


def _field(number: int, value: bytes | memoryview) -> bytes:
    return _encode_varint(number << 3 | 2) + _encode_varint(len(value)) + bytes(value)


def _scalar_float(tensor: memoryview) -> tuple[str, bytes] | None:
    """(name, float32 bytes) of an initializer holding exactly one float32 value, else None."""
    name, dims, dtype, data = None, [], None, b""
    for number, wire, value, _ in _fields(tensor):
        if number == _TENSOR_NAME and wire == 2:
            name = bytes(value).decode()
        elif number == _TENSOR_DIMS:
            dims += [value] if wire == 0 else _packed_varints(bytes(value))
        elif number == _TENSOR_DATA_TYPE:
            dtype = value
        elif number in (_TENSOR_RAW_DATA, _TENSOR_FLOAT_DATA):
            if len(data) + len(value) > 4:
                return None  # more than one float (the network's weights): not copied
            data += bytes(value)  # raw little-endian bytes, packed floats or one fixed32
        elif number == _TENSOR_DATA_LOCATION and value != 0:
            return None  # stored outside the model file
    size = 1
    for d in dims:
        size *= int(d)
    if name is None or dtype != _FLOAT or size != 1 or len(data) != 4:
        return None
    return name, data


def _packed_varints(buf: bytes) -> list[int]:
    out, pos = [], 0
    while pos < len(buf):
        value, pos = _varint(buf, pos)
        out.append(value)
    return out


def _node_parts(node: memoryview) -> tuple[str, list[str], str, bool]:
    """(op_type, inputs, domain, has a subgraph attribute) of a NodeProto."""
    op, inputs, domain, subgraph = "", [], "", False
    for number, _, value, _ in _fields(node):
        if number == _NODE_OP_TYPE:
            op = bytes(value).decode()
        elif number == _NODE_INPUT:
            inputs.append(bytes(value).decode())
        elif number == _NODE_DOMAIN:
            domain = bytes(value).decode()
        elif number == _NODE_ATTRIBUTE:
            subgraph |= any(n in (_ATTR_GRAPH, _ATTR_GRAPHS) for n, *_ in _fields(value))
    return op, inputs, domain, subgraph


def _leaky_relu(node: memoryview, alpha: bytes) -> bytes:
    """The PRelu NodeProto as LeakyRelu(alpha): its slope input dropped, its other fields kept."""
    out = bytearray()
    inputs = 0
    for number, _, _, raw in _fields(node):
        if number == _NODE_INPUT:
            inputs += 1
            if inputs > 1:
                continue
        if number == _NODE_OP_TYPE:
            raw = _field(_NODE_OP_TYPE, b"LeakyRelu")
        out += raw
    attribute = (
        _field(1, b"alpha")
        + _encode_varint(2 << 3 | 5)
        + alpha
        + _encode_varint(_ATTR_TYPE << 3 | 0)
        + _encode_varint(_FLOAT)
    )
    return bytes(out + _field(_NODE_ATTRIBUTE, attribute))


def prelu_as_leaky_relu(model: bytes) -> tuple[bytes, int]:
    """The serialised ONNX model with every single-slope PRelu as LeakyRelu, and how many were rewritten."""
    top = _fields(memoryview(model))
    graphs = [f for f in top if f[0] == _MODEL_GRAPH and f[1] == 2]
    if len(graphs) != 1:
        return model, 0
    graph = _fields(graphs[0][2])
    nodes = [(i, _node_parts(v)) for i, (n, w, v, _) in enumerate(graph) if n == _GRAPH_NODE]
    if any(parts[3] for _, parts in nodes):
        return model, 0  # subgraphs may use the outer graph's initializers: leave such models alone
    exposed = {  # graph inputs (an initializer there can be overridden) and outputs
        bytes(v2).decode()
        for n, w, v, _ in graph
        if n in (_GRAPH_INPUT, _GRAPH_OUTPUT)
        for n2, w2, v2, _ in _fields(v)
        if n2 == 1
    }
    slopes: dict[str, tuple[int, bytes]] = {}
    for i, (n, w, v, _) in enumerate(graph):
        if n == _GRAPH_INITIALIZER and w == 2:
            scalar = _scalar_float(v)
            if scalar is not None and scalar[0] not in exposed:
                slopes[scalar[0]] = (i, scalar[1])
    uses: dict[str, int] = {}
    for _, (_, inputs, _, _) in nodes:
        for name in inputs:
            uses[name] = uses.get(name, 0) + 1
    replace: dict[int, bytes] = {}
    drop: set[int] = set()
    for i, (op, inputs, domain, _) in nodes:
        if op == "PRelu" and domain in ("", "ai.onnx") and len(inputs) == 2 and inputs[1] in slopes:
            where, alpha = slopes[inputs[1]]
            replace[i] = _leaky_relu(graph[i][2], alpha)
            uses[inputs[1]] -= 1
            if uses[inputs[1]] == 0:
                drop.add(where)
    if not replace:
        return model, 0
    pieces = [
        _field(_GRAPH_NODE, replace[i]) if i in replace else raw
        for i, (_, _, _, raw) in enumerate(graph)
        if i not in drop
    ]
    head = _encode_varint(_MODEL_GRAPH << 3 | 2) + _encode_varint(sum(len(p) for p in pieces))
    out: list[bytes | memoryview] = []
    for f in top:
        out += [head, *pieces] if f is graphs[0] else [f[3]]
    return b"".join(out), len(replace)  # one copy of the 13 MB
