"""Crash-safe file writes.

Every file the toolkit writes goes to a temporary file in the destination folder and is renamed
into place, so a process killed at any instant leaves either the old or the new version of the
file, never a torn one (DESIGN.md, "Files on disk").
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from awp.errors import UserError


def _atomic_write(path: Path, write: Callable[[io.BufferedWriter], None]) -> None:
    path = Path(path)
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise UserError(f"cannot write into {folder}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    _atomic_write(Path(path), lambda handle: handle.write(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` atomically."""
    _atomic_write(Path(path), lambda handle: torch.save(obj, handle))


def atomic_savefig(fig: Any, path: str | Path, **kwargs: Any) -> None:
    """Save a matplotlib figure atomically; the format comes from the file suffix."""
    path = Path(path)
    kwargs.setdefault("format", path.suffix.lstrip("."))
    _atomic_write(path, lambda handle: fig.savefig(handle, **kwargs))


def write_csv(path: str | Path, rows: list[Mapping[str, Any]], columns: list[str] | None = None) -> None:
    """Write a whole CSV table atomically (used to append: rewrite with the new row added)."""
    columns = columns or (list(rows[0].keys()) if rows else [])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def read_csv_rows(path: str | Path) -> list[dict[str, str]]:
    """Read a CSV written by :func:`write_csv` (empty list when the file does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes (landscape caches are keyed by it, never by file name)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
