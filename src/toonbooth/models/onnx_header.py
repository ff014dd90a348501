"""Read an ONNX model's graph inputs and outputs (names, element types, shapes) without loading it.

An ONNX file is a protobuf `ModelProto`; its weights sit in `graph.initializer` and make up nearly all of
the bytes. This reader walks the protobuf wire format (varint / 64-bit / length-delimited / 32-bit fields,
https://protobuf.dev/programming-guides/encoding/) with seeks, reading only the small messages on the path
`ModelProto.graph (7)` → `GraphProto.input (11)` / `output (12)` → `ValueInfoProto.name (1)`, `type (2)` →
`TypeProto.tensor_type (1)` → `elem_type (1)`, `shape (2)` → `TensorShapeProto.dim (1)` → `dim_value (1)` /
`dim_param (2)` (field numbers from onnx/onnx.proto). Identifying a 217 MB detector takes a few reads, no
onnxruntime session and no `onnx` package. Initializers listed as graph inputs (old exporters) are dropped.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..core.errors import ModelError

_MAX_SMALL_MESSAGE = 1 << 20  # a ValueInfoProto / TensorShapeProto is tiny; refuse absurd lengths
_MAX_VARINT_BYTES = 10


@dataclass(frozen=True)
class OnnxValue:
    """One graph input or output: `shape` has None for symbolic / unknown dimensions."""

    name: str
    elem_type: int
    shape: tuple[int | None, ...]


@dataclass(frozen=True)
class OnnxSignature:
    inputs: tuple[OnnxValue, ...]
    outputs: tuple[OnnxValue, ...]

    # the subset of onnxruntime's session API the DWPose signature checks use
    def get_inputs(self) -> tuple[OnnxValue, ...]:
        return self.inputs

    def get_outputs(self) -> tuple[OnnxValue, ...]:
        return self.outputs


def _varint(f: BinaryIO) -> int:
    shift = value = 0
    for _ in range(_MAX_VARINT_BYTES):
        b = f.read(1)
        if not b:
            raise EOFError("truncated varint")
        value |= (b[0] & 0x7F) << shift
        if not b[0] & 0x80:
            return value
        shift += 7
    raise ValueError("varint longer than 10 bytes")


def _fields(f: BinaryIO, end: int):
    """(field number, wire type, value or (offset, length)) of the fields up to offset `end`; length-delimited
    fields are not read (the caller seeks into them or skips them)."""
    while f.tell() < end:
        key = _varint(f)
        number, wire = key >> 3, key & 7
        if wire == 0:
            yield number, wire, _varint(f)
        elif wire == 1:
            f.seek(8, io.SEEK_CUR)
        elif wire == 5:
            f.seek(4, io.SEEK_CUR)
        elif wire == 2:
            length = _varint(f)
            start = f.tell()
            if start + length > end:
                raise ValueError(f"field {number} runs past its message")
            yield number, wire, (start, length)
            f.seek(start + length)
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")


def _small(f: BinaryIO, span: tuple[int, int]) -> bytes:
    start, length = span
    if length > _MAX_SMALL_MESSAGE:
        raise ValueError(f"a {length}-byte message where a small one was expected")
    f.seek(start)
    data = f.read(length)
    if len(data) != length:
        raise EOFError("truncated message")
    return data


def _value_info(data: bytes) -> OnnxValue:
    f = io.BytesIO(data)
    name, elem, dims = "", 0, []
    for number, wire, value in _fields(f, len(data)):
        if number == 1 and wire == 2:
            name = _small(f, value).decode("utf-8", "replace")
        elif number == 2 and wire == 2:  # TypeProto
            tf = io.BytesIO(_small(f, value))
            for n2, w2, v2 in _fields(tf, len(tf.getbuffer())):
                if n2 != 1 or w2 != 2:  # tensor_type only
                    continue
                tt = io.BytesIO(_small(tf, v2))
                for n3, w3, v3 in _fields(tt, len(tt.getbuffer())):
                    if n3 == 1 and w3 == 0:
                        elem = int(v3)
                    elif n3 == 2 and w3 == 2:  # TensorShapeProto
                        sh = io.BytesIO(_small(tt, v3))
                        for n4, w4, v4 in _fields(sh, len(sh.getbuffer())):
                            if n4 != 1 or w4 != 2:
                                continue
                            dim: int | None = None
                            dd = io.BytesIO(_small(sh, v4))
                            for n5, w5, v5 in _fields(dd, len(dd.getbuffer())):
                                if n5 == 1 and w5 == 0:
                                    dim = int(v5) if int(v5) > 0 else None
                            dims.append(dim)
            f.seek(value[0] + value[1])
    return OnnxValue(name, elem, tuple(dims))


def read_onnx_signature(path: str | Path) -> OnnxSignature:
    """The graph inputs (minus initializers) and outputs of an ONNX file. ModelError naming the file when
    it is not an ONNX model."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            graph: tuple[int, int] | None = None
            for number, wire, value in _fields(f, size):
                if number == 7 and wire == 2:
                    graph = value
            if graph is None:
                raise ValueError("no graph")
            f.seek(graph[0])
            inputs, outputs, initializers = [], [], set()
            for number, wire, value in _fields(f, graph[0] + graph[1]):
                if wire != 2:
                    continue
                here = f.tell()
                if number == 11:
                    inputs.append(_value_info(_small(f, value)))
                elif number == 12:
                    outputs.append(_value_info(_small(f, value)))
                elif number == 5:  # TensorProto: only its name (field 8), the data stays on disk
                    f.seek(value[0])
                    for n2, w2, v2 in _fields(f, value[0] + value[1]):
                        if n2 == 8 and w2 == 2:
                            initializers.add(_small(f, v2).decode("utf-8", "replace"))
                            break
                f.seek(here)
    except OSError as e:
        raise ModelError(f"{path.name}: cannot read it ({e})") from e
    except (ValueError, EOFError, UnicodeDecodeError) as e:
        raise ModelError(f"{path.name}: not an ONNX model ({e})") from e
    if not outputs:
        raise ModelError(f"{path.name}: not an ONNX model (its graph has no outputs)")
    return OnnxSignature(tuple(v for v in inputs if v.name not in initializers), tuple(outputs))
