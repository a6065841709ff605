"""`fs/read_text_file` and `fs/write_text_file`, served only inside a session's directory.

An agent asks for absolute paths. A path is refused when it is relative, names `..`, lies
outside the directory, or passes through a symbolic link below it (a link could point anywhere;
the final component is also opened with `O_NOFOLLOW`, so a link swapped in after the check is
refused too). Blocking: call through `trio.to_thread.run_sync`.

```
FileRequestError ........ what the agent is answered (a JSON-RPC error code and message)
```
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Final

from kimaki.agents.acp._jsonrpc import INTERNAL_ERROR, INVALID_PARAMS
from kimaki.errors import KimakiError

__all__ = ["MAX_READ", "RESOURCE_NOT_FOUND", "FileRequestError", "read_text", "write_text"]

RESOURCE_NOT_FOUND: Final = -32002
MAX_READ: Final = 16 * 1024 * 1024


class FileRequestError(KimakiError):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _confine(root: Path, path: str) -> Path:
    """`path` as a path under the resolved `root`, or FileRequestError."""
    candidate = Path(path)
    if not candidate.is_absolute():
        raise FileRequestError(INVALID_PARAMS, f"not an absolute path: {path}")
    if ".." in candidate.parts:
        raise FileRequestError(INVALID_PARAMS, f"paths with '..' are refused: {path}")
    resolved_root = root.resolve()
    for base in (resolved_root, root.absolute()):
        try:
            relative = candidate.relative_to(base)
            break
        except ValueError:
            continue
    else:
        raise FileRequestError(INVALID_PARAMS, f"outside the session's directory: {path}")
    current = resolved_root
    for part in relative.parts:
        current = current / part
        if current.is_symlink():
            raise FileRequestError(INVALID_PARAMS, f"symbolic links are refused: {path}")
    return current


def _os_error(exc: OSError, path: str) -> FileRequestError:
    if exc.errno == errno.ENOENT:
        return FileRequestError(RESOURCE_NOT_FOUND, f"no such file: {path}")
    if exc.errno == errno.ELOOP:
        return FileRequestError(INVALID_PARAMS, f"symbolic links are refused: {path}")
    return FileRequestError(INTERNAL_ERROR, f"{exc.strerror or exc}: {path}")


def read_text(root: Path, path: str, line: int | None = None, limit: int | None = None) -> str:
    """The file's text, from 1-based `line`, at most `limit` lines."""
    target = _confine(root, path)
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with open(fd, "rb") as file:
            data = file.read(MAX_READ + 1)
    except OSError as exc:
        raise _os_error(exc, path) from None
    if len(data) > MAX_READ:
        raise FileRequestError(INVALID_PARAMS, f"over {MAX_READ // (1024 * 1024)} MiB: {path}")
    text = data.decode("utf-8", "replace")
    if line is None and limit is None:
        return text
    lines = text.splitlines(keepends=True)
    start = max(0, (line or 1) - 1)
    end = None if limit is None else start + max(0, limit)
    return "".join(lines[start:end])


def write_text(root: Path, path: str, content: str) -> None:
    """Create or replace the file (and its missing parent directories)."""
    target = _confine(root, path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(
            target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666
        )
        with open(fd, "wb") as file:
            file.write(content.encode("utf-8"))
    except OSError as exc:
        raise _os_error(exc, path) from None
