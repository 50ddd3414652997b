"""Paths as a user names them: a leading `~` expanded; a file written to one whole or not at all."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

from tradeoff.abort import terminated_as_interrupted


def user_path(text: str | Path) -> Path:
    """`text` with a leading `~` or `~user` expanded. A `~name` naming no user of this host (or a
    home that cannot be found) stays as written, so the caller says the file is missing in its own
    words instead of raising pathlib's RuntimeError."""
    path = Path(text)
    try:
        return path.expanduser()
    except RuntimeError:
        return path


def _a_stream(path: Path) -> bool:
    """Whether `path` names a device or a process's descriptor (/dev/stdout, /dev/fd/3,
    /proc/self/fd/1), whatever it resolves to."""
    return path.absolute().parts[1:2] in (("dev",), ("proc",))


@contextlib.contextmanager
def written_whole(path: str | Path) -> Iterator[Path]:
    """A path to write `path`'s new content to: a file beside it (a hidden name, `path`'s suffix,
    so that a writer that picks its format by suffix picks the same), renamed over `path` once the
    block ends. A failure, a Ctrl-C or a SIGTERM in the block removes it: `path` is its previous
    file or none, never one cut short (written in place, a full disk or a kill left a truncated
    export that could read as whole). The new file has the permissions the old one had; a link
    is written through; a device or pipe (`/dev/null`, `/dev/stdout` into `| wc`), and any path
    under /dev or /proc (`/dev/stdout` where the shell sent it to a file: replacing that file would
    lose what the shell writes there after), is written as it is, not replaced."""
    try:
        kept = os.stat(path).st_mode
    except FileNotFoundError:
        kept = None
    if (kept is not None and not stat.S_ISREG(kept)) or _a_stream(Path(path)):
        yield Path(path)
        return
    target = Path(os.path.realpath(path))
    part = target.with_name(f".{target.stem}.{secrets.token_hex(4)}.partial{target.suffix}")
    os.close(os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # the umask's mode
    try:
        if kept is not None:
            os.chmod(part, stat.S_IMODE(kept))
        with terminated_as_interrupted():
            yield part
            os.replace(part, target)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
