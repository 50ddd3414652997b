"""A path as a user wrote it, its home directory expanded."""

from __future__ import annotations

from pathlib import Path


def user_path(text: str | Path) -> Path:
    """`text` with a leading `~` or `~user` expanded. A `~name` naming no user of this host (or a
    home that cannot be found) stays as written, so the caller says the file is missing in its own
    words instead of raising pathlib's RuntimeError."""
    path = Path(text)
    try:
        return path.expanduser()
    except RuntimeError:
        return path
