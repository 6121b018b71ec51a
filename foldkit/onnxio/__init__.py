"""Everything about ONNX files: the protobuf wire codec, lazy reading, streaming writes, safe atomic
file handling, validation and foldkit's metadata. Framework-free: imports onnx and numpy, never torch."""
