"""Protobuf's wire format, as much of it as ONNX files need: varints, tags and field walking.

A protobuf message is a sequence of fields, each a varint tag (field number << 3 | wire type)
followed by its value; length-delimited values (sub-messages, bytes) carry their length as a
varint. That is all :mod:`foldkit.onnxio.lazy` needs to locate tensors without reading them and
all :mod:`foldkit.onnxio.stream` needs to write a model piece by piece.
"""

from __future__ import annotations

from collections.abc import Iterator

# Field numbers in onnx.proto3 that the lazy reader and the streaming writer use.
MODEL_GRAPH_FIELD = 7  # ModelProto.graph
GRAPH_INITIALIZER_FIELD = 5  # GraphProto.initializer
TENSOR_RAW_DATA_FIELD = 9  # TensorProto.raw_data

# Protobuf refuses to parse a message of 2 GiB or more; a model that large keeps its tensors in
# ``MODEL.onnx.data`` beside it (ONNX's external data), each at an offset aligned like onnx's own writer.
PROTOBUF_LIMIT = 2**31 - 1
EXTERNAL_SUFFIX = ".data"
EXTERNAL_ALIGNMENT = 4096

VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5


def encode_varint(value: int) -> bytes:
    """``value`` (non-negative) as a protobuf varint: 7 bits a byte, low bits first."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def length_delimited_key(field: int) -> bytes:
    """The tag of a length-delimited field number ``field``."""
    return encode_varint(field << 3 | LENGTH_DELIMITED)


def read_varint(buffer, position: int) -> tuple[int, int]:
    """(value, position after it) of the varint at ``position``; IndexError past the end."""
    value = shift = 0
    while True:
        byte = buffer[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def iter_fields(buffer, start: int, end: int) -> Iterator[tuple[int, int, int, int, int]]:
    """(field number, wire type, field start, value start, value end) for each field in [start, end).

    Raises ValueError on a wire type ONNX never uses or a field that runs past ``end``.
    """
    position = start
    while position < end:
        field_start = position
        tag, position = read_varint(buffer, position)
        number, wire = tag >> 3, tag & 7
        if wire == VARINT:
            _, value_end = read_varint(buffer, position)
        elif wire == FIXED64:
            value_end = position + 8
        elif wire == LENGTH_DELIMITED:
            length, position = read_varint(buffer, position)
            value_end = position + length
        elif wire == FIXED32:
            value_end = position + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if value_end > end:
            raise ValueError("field runs past the end of its message")
        yield number, wire, field_start, position, value_end
        position = value_end
