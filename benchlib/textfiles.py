"""Reading the small YAML files people give us (params files, price tables).

Every way such a file can be unreadable (missing, a folder, no permission, empty,
binary, not UTF-8, far too large) is bad input: an :class:`InputError` that names the
file, what is wrong and the fix, never a traceback.
"""
from __future__ import annotations

import codecs
from pathlib import Path

from benchlib.errors import InputError

#: Params files and price tables are a few kilobytes; a larger file is the wrong file
#: (and reading at most this much keeps `/dev/zero` from filling the memory).
MAX_TEXT_BYTES = 1 << 20

#: Byte-order marks of encodings an editor may have saved the file in instead of UTF-8.
#: UTF-32 first: its little-endian mark starts with UTF-16's.
_WIDE_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)


def read_text(path: str | Path, what: str, fix: str, error: type[InputError] = InputError) -> str:
    """The UTF-8 text of the file at `path`, or `error` saying what is wrong and the fix.

    `what` names the file in messages ("params file"); `fix` says what an empty one
    should hold. A leading UTF-8 byte-order mark (Windows editors write one) is dropped.
    """
    path = Path(path)
    data = _read_bytes(path, what, error)
    text = _decode(data, path, what, error)
    if not text.strip():
        raise error(f"{path}: the {what} is empty; {fix}")
    return text


def _read_bytes(path: Path, what: str, error: type[InputError]) -> bytes:
    try:
        with path.open("rb") as file:
            data = file.read(MAX_TEXT_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise error(f"{path}: cannot read the {what} ({reason}); {_os_error_fix(exc, path)}") from None
    if len(data) > MAX_TEXT_BYTES:
        raise error(
            f"{path}: the {what} is larger than {MAX_TEXT_BYTES // (1 << 20)} MiB, far more than a {what} "
            "holds; check that the path names the right file"
        )
    return data


def _os_error_fix(exc: OSError, path: Path) -> str:
    if isinstance(exc, FileNotFoundError):
        relative = "" if path.is_absolute() else f" (a relative path starts at {Path.cwd()})"
        return f"check the path{relative}"
    if isinstance(exc, IsADirectoryError):
        return "give the YAML file inside it, not the folder"
    if isinstance(exc, PermissionError):
        return "make it readable for this user (e.g. chmod a+r), or copy it somewhere readable"
    return "check the path, and that the file is a plain file on a working disk"


def _decode(data: bytes, path: Path, what: str, error: type[InputError]) -> str:
    for bom, encoding in _WIDE_BOMS:
        if data.startswith(bom):
            raise error(f"{path}: the {what} is saved as {encoding}, not UTF-8; save it as UTF-8")
    if b"\0" in data:
        raise error(
            f"{path}: the {what} looks like a binary file, not YAML (NUL byte at offset {data.index(0)}); "
            "give the path of the YAML text file"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise error(
            f"{path}: the {what} is not valid UTF-8: byte 0x{data[exc.start]:02x} at offset {exc.start} "
            f"(line {line}); save it as UTF-8"
        ) from None
    return text.removeprefix("\ufeff")
