"""File names psbridge derives from the user's: kept within file-system limits.

An output name may use a file system's whole 255 bytes, and its path SQLite's whole 512;
a run folder or temporary file named after it must still fit.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

#: bytes in one path component on NTFS (255 UTF-16 units), ext4, APFS, XFS...
NAME_MAX = 255
#: SQLite's longest file name (unix and Windows VFS), less room for "-journal"/"-wal"
SQLITE_PATH_MAX = 512 - len("-journal")


def user_data_dir() -> Path:
    """psbridge's folder for its own data: ``%LOCALAPPDATA%\\psbridge`` on Windows,
    ``$XDG_DATA_HOME/psbridge`` (``~/.local/share/psbridge``) elsewhere."""
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
    else:
        base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "psbridge"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:10]


def fitting_name(stem: str, suffix: str, *, reserve: int = 0) -> str:
    """``stem + suffix``, or, when that (plus ``reserve`` bytes a caller adds) would pass
    NAME_MAX, the stem cut short and followed by a digest of the whole stem, so two long
    names still get two names."""
    limit = NAME_MAX - reserve
    name = stem + suffix
    if len(name.encode("utf-8", "surrogatepass")) <= limit:
        return name
    tail = f"~{_digest(stem)}{suffix}"
    room = limit - len(tail.encode("utf-8", "surrogatepass"))
    cut = stem.encode("utf-8", "surrogatepass")[: max(room, 0)]
    return cut.decode("utf-8", "ignore") + tail


def sqlite_fits(path: Path) -> bool:
    """True when SQLite can open ``path`` (its absolute form is short enough)."""
    return len(str(path.absolute()).encode("utf-8", "surrogatepass")) <= SQLITE_PATH_MAX


def runs_folder() -> Path:
    """Where run folders go whose place beside the output would be too deep for SQLite."""
    return user_data_dir() / "runs"


def run_folder_elsewhere(output: Path, suffix: str) -> Path:
    """A run folder for ``output`` under :func:`runs_folder`, named by the output's
    absolute path so a rerun (``--resume``) finds it again."""
    return runs_folder() / f"{_digest(str(output.absolute()))}{suffix}"
