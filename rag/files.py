"""Bounded reads of regular files: the size and kind of a file are judged on the open descriptor, never on a path
that may change between a check and the read."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from rag.errors import RagError

MB = 1_000_000


def read_descriptor(fd: int, limit: int) -> bytes:
    """The bytes of the regular file open on fd (which is closed), judged by fstat: ValueError (the reason) if it is
    a folder, a device, pipe or socket, or holds more than limit bytes; at most limit + 1 bytes are ever read."""
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise ValueError("a folder, not a file")
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("not a regular file (a device, pipe or socket)")
        if info.st_size > limit:
            raise ValueError(f"larger than {limit / MB:g} MB")
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as f:  # a regular file from here on: the file object closes fd
        data = f.read(limit + 1)
    if len(data) > limit:  # it grew while being read
        raise ValueError(f"larger than {limit / MB:g} MB")
    return data


def read_bounded(path: Path, limit: int) -> bytes:
    """The bytes of a regular file, reading at most limit + 1 of them (ValueError if it is larger or not regular).
    The file is opened without following a final link and without blocking, then checked on the open handle."""
    return read_descriptor(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK), limit)


def read_input(path: Path, limit: int, what: str) -> bytes:
    """The bytes of a file the user names (a config file, a gold file…; links followed, opened without blocking):
    a one-line RagError saying what is wrong with it, naming it as `what`."""
    try:
        return read_descriptor(os.open(path, os.O_RDONLY | os.O_NONBLOCK), limit)
    except FileNotFoundError as e:
        raise RagError(f"{what} {path} not found") from e
    except ValueError as e:
        raise RagError(f"{what} {path} is {e}") from e
    except OSError as e:
        raise RagError(f"cannot read {what} {path} ({e.strerror})") from e


def read_input_text(path: Path, limit: int, what: str) -> str:
    """The UTF-8 text of a file the user names (see read_input); a one-line RagError naming the first bad byte."""
    data = read_input(path, limit, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RagError(f"{path} is not UTF-8 text (byte {e.start})") from e
