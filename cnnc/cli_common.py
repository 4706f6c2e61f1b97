"""What the command line's commands share (cli.py and commands.py): the usage error, the
model named on the command line, and output files.
"""

from __future__ import annotations

import contextlib
import os
import stat

from .errors import CnncError


class UsageError(CnncError):
    """A command line that cannot be run as written: exit status 2, like argparse's."""

    def __init__(self, message: str, prog: str = "cnnc"):
        super().__init__(message)
        self.prog = prog


# ---------------------------------------------------------------- models
_ZIP_MAGIC = b"PK\x03\x04"
# The tags that may follow a ModelProto's leading ir_version (field 1, a varint): its other
# fields (producer_name 2, ..., graph 7, opset_import 8, metadata_props 14,
# training_info 20, functions 25), as serialisers write them in field order.
_ONNX_NEXT_TAGS = {0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72, 0xA2, 0xCA}


def model_kind(path: str) -> str:
    """'onnx', 'cnnc' or 'cnn': by the extension, else by the first bytes, so a renamed
    file is still recognised (a .cnnc artifact is a zip, an ONNX model a protobuf)."""
    ext = os.path.splitext(path)[1].lower()
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError:
        head = b""  # the loader reports what is wrong with the file
    looks_onnx = (len(head) >= 3 and head[0] == 0x08 and 0 < head[1] < 0x80
                  and head[2] in _ONNX_NEXT_TAGS)
    if ext == ".onnx" or looks_onnx:
        return "onnx"
    if ext == ".cnnc" or head == _ZIP_MAGIC:
        return "cnnc"
    return "cnn"


def onnx_source(path: str):
    """(.cnn text, weights, Program) of an ONNX model, imported (§12)."""
    from .graph import load_source
    from .onnx import import_onnx
    text, weights = import_onnx(path)
    return text, weights, load_source(text, file=path)


def load_artifact(path: str, network: str | None, max_memory: int | None = None):
    """The Network stored in a .cnnc file; `--network`, if given, must be its name."""
    from .compiler import load
    net = load(path, max_memory=max_memory)
    if network is not None and network != net.name:
        raise CnncError(f"the artifact holds network '{net.name}', not '{network}'", file=path)
    return net


def load_graphs(args):
    """(source graph, the artifact's Network or None) of the model named on the command line."""
    from .graph import build_graph, load_program
    kind = model_kind(args.model)
    if kind == "onnx":
        return build_graph(onnx_source(args.model)[2], args.network), None
    if kind == "cnnc":
        net = load_artifact(args.model, args.network)
        return net._source_graph, net
    return build_graph(load_program(args.model), args.network), None


# ---------------------------------------------------------------- output files
@contextlib.contextmanager
def output_file(path: str, binary: bool = False):
    """An output named on the command line, opened for writing.

    A regular file (or a new one) is written in place, and removed if writing it fails;
    a character device or a pipe (/dev/null, /dev/stdout, a FIFO) is written to, never
    replaced by a file; anything else (a directory, a block device) is refused.
    """
    regular = refuse_special_output(path)
    try:
        with open(path, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as fh:
            yield fh
    except OSError as err:
        if regular and os.path.isfile(path):
            os.unlink(path)
        raise CnncError(f"cannot write '{path}': {err.strerror or err}") from None


def refuse_special_output(path: str) -> bool:
    """Raise unless `path` is absent, a regular file, a character device or a pipe;
    True if it is (or will be) a regular file."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return True
    except OSError as err:
        raise CnncError(f"cannot write '{path}': {err.strerror}") from None
    if stat.S_ISREG(mode):
        return True
    if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
        return False
    kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
    raise CnncError(f"cannot write '{path}': it is {kind}")
