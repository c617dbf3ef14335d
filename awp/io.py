"""Crash-safe file writes.

Every file the toolkit writes goes to a temporary file in the destination folder and is renamed
into place, so a process killed at any instant leaves either the old or the new version of the
file, never a torn one (the README's "Files").

Temporary files are hidden and end in ``.tmp`` (``.last.pt.HOST-PID.XXXX.tmp``), so nothing that
looks for real outputs can mistake one for a checkpoint or a table; those left behind by a killed
process are removed by the next write into the same folder (:func:`remove_stale_temporaries`).
Files get the permissions of a plain ``open()`` (umask), not ``mkstemp``'s owner-only 0600.

JSON is strict (RFC 8259): a NaN or infinite float is written as ``null`` and its place and kind
are listed under the top-level key ``nonfinite_values`` (``{"flatness.sharpness": "nan"}``), so
every reader, ``jq`` and ``json.loads(..., parse_constant=...)`` included, can parse it and still
see what was not finite (:func:`strict_json`). Commands check where they will write before they
compute anything (:func:`check_output_folder`, :func:`check_output_file`).
"""
from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import math
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from awp.errors import UserError, one_line


# mkstemp creates files readable by the owner only; a real output gets the permissions that
# open() would give it. The umask can only be read by setting it, so it is read once, at import.
_UMASK = os.umask(0o022)
os.umask(_UMASK)
_HOST = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname())[:40] or "host"
TMP_SUFFIX = ".tmp"


def _tmp_prefix(name: str) -> str:
    """Temporary names are hidden, end in ``.tmp`` and carry host and pid: ``.last.pt.HOST-PID.XXXX.tmp``.

    So no glob for real outputs (``*.pt``, ``*.csv``, ``landscape.json``) ever matches one, and a
    temporary file left by a killed process can be recognized as stale and removed.
    """
    return f".{name}.{_HOST}-{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, owned by someone else
        return True
    return True


_STALE = re.compile(rf"^\..+\.{re.escape(_HOST)}-(\d+)\.[^.]+{re.escape(TMP_SUFFIX)}$")


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete temporary files in ``folder`` left by killed processes of this host; returns them.

    Only files named by :func:`_tmp_prefix` on this host whose process no longer exists are
    removed: a live writer (another process, or a thread of this one) is never disturbed, and a
    folder shared with other machines keeps their files.
    """
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _STALE.match(entry.name)
        if not match:
            continue
        pid = int(match.group(1))
        if pid == os.getpid() or _pid_alive(pid):
            continue
        try:
            os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            pass
    return removed


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (a power cut, not only a killed process); best effort."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _why(folder: Path, exc: OSError) -> str:
    """The reason a folder cannot be written, naming a file that stands where a folder should be."""
    for parent in (folder, *folder.parents):
        if parent.exists():
            if not parent.is_dir():
                return f"{parent} is a file, not a folder"
            break
    return exc.strerror or str(exc)


_DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EFBIG)


def _disk_error(exc: BaseException) -> OSError | None:
    """The OSError about the disk behind ``exc`` (torch.save wraps a failed write in a RuntimeError
    whose context is the ENOSPC), or None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _DISK_ERRORS:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _free(folder: Path) -> str:
    try:
        return f"{shutil.disk_usage(folder).free / 2**20:,.1f} MiB free on {folder}"
    except OSError:
        return f"free space of {folder} unknown"


def _atomic_write(path: Path, write: Callable[[io.BufferedWriter], None]) -> None:
    path = Path(path)
    folder = path.parent
    if path.is_dir():
        raise UserError(f"cannot write {path}: it is a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path.name), suffix=TMP_SUFFIX, dir=folder)
    except OSError as exc:
        raise UserError(f"cannot write into {folder}: {_why(folder, exc)}") from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o666 & ~_UMASK)
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        disk = _disk_error(exc)
        if disk is not None:  # the old file (if any) is untouched: only the temporary was torn
            detail = f"; {_free(folder)}" if disk.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else ""
            raise UserError(f"cannot write {path}: {disk.strerror or disk}{detail}") from exc
        raise
    _fsync_folder(folder)
    remove_stale_temporaries(folder)


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def _check_names(path: Path) -> None:
    """One line when a name in ``path`` is longer than the file system takes (checked before any
    system call, which would fail on it with an unrelated message)."""
    found = next((p for p in path.parents if len(p.name.encode()) <= 255 and _exists(p)), Path("."))
    limit = _name_max(found)
    for part in path.parts:
        if len(part.encode()) > limit:
            raise UserError(f"cannot write {path}: the name {part[:40]}... is {len(part.encode())} bytes, over the "
                            f"file system's {limit}")


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:
        return False


def _check_links(path: Path, what: str) -> None:
    """One line for a symlink loop, or a symlink to nothing, at ``path`` or above it."""
    _check_names(path)
    try:
        path.resolve()
    except (RuntimeError, OSError) as exc:  # Python 3.11-3.12 raise RuntimeError on a loop, later ones OSError
        raise UserError(f"cannot use {what} {path}: a symlink loop ({one_line(exc, 120)})") from exc
    for link in (path, *path.parents):
        if link.is_symlink() and not link.exists():
            raise UserError(f"cannot use {what} {path}: {link} is a symlink to {os.readlink(link)}, "
                            f"which does not exist")


def _writable_folder(folder: Path, target: Path, what: str = "output") -> None:
    """One line unless ``folder`` (existing or not) can be created and written into to write
    ``target``: no symlink loop or dangling symlink on the way, every name short enough."""
    _check_links(target, what)
    found = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
    if not found.is_dir():
        raise UserError(f"cannot write {target}: {found} is a file, not a folder")
    if not os.access(found, os.W_OK | os.X_OK):
        raise UserError(f"cannot write {target}: {found} is not writable (permission denied)")


def check_output_folder(path: str | Path, what: str = "output folder") -> Path:
    """Fail with one line, before any work, unless ``path`` can be used as a folder to write into.

    ``path`` may not exist yet (nothing is created here): then its nearest existing ancestor must
    be a writable folder. A file in its place, or above it, a symlink loop, a symlink to nothing
    and a name too long for the file system are named in the message.
    """
    path = Path(path)
    _check_links(path, what)
    if path.exists() and not path.is_dir():
        raise UserError(f"{what} {path} is a file, not a folder")
    _writable_folder(path, path, what)
    return path


def check_output_file(path: str | Path, what: str = "output file") -> Path:
    """Fail with one line, before any work, unless a file can be written at ``path``: not a
    folder, its folder writable or creatable, and its name short enough for the temporary file
    it is written through (``.NAME.HOST-PID.XXXXXXXX.tmp``)."""
    path = Path(path)
    _check_links(path, what)
    if path.is_dir():
        raise UserError(f"{what} {path} is a folder, not a file")
    _writable_folder(path.parent, path, what)
    temporary = len(_tmp_prefix(path.name).encode()) + 8 + len(TMP_SUFFIX)
    limit = _name_max(next((p for p in path.parents if _exists(p)), Path(".")))
    if temporary > limit:
        raise UserError(f"cannot write {path}: its name is {len(path.name.encode())} bytes; with the temporary file's "
                        f"prefix and suffix that is {temporary}, over the file system's {limit}")
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    _atomic_write(Path(path), lambda handle: handle.write(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


NONFINITE_KEY = "nonfinite_values"


def strict_json(obj: Any) -> tuple[Any, dict[str, str]]:
    """(``obj`` with every NaN/infinite float replaced by None, {path: 'nan' | 'inf' | '-inf'}).

    Paths are dotted keys with list indices, e.g. ``rows[3].loss``; numpy scalars become Python
    numbers on the way. Nothing else changes.
    """
    found: dict[str, str] = {}

    def walk(value: Any, path: str) -> Any:
        if isinstance(value, (float, np.floating)):
            number = float(value)
            if math.isfinite(number):
                return number
            found[path or "$"] = "nan" if number != number else ("inf" if number > 0 else "-inf")
            return None
        if isinstance(value, np.integer):
            return int(value)
        if isinstance(value, dict):
            return {key: walk(item, f"{path}.{key}" if path else str(key)) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [walk(item, f"{path}[{i}]") for i, item in enumerate(value)]
        return value

    return walk(obj, ""), found


def nonfinite_paths(obj: Any) -> dict[str, str]:
    """{path: kind} of every NaN/infinite float in ``obj`` (see :func:`strict_json`); {} when none."""
    return strict_json(obj)[1]


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented strict JSON to ``path`` atomically.

    Non-finite floats become ``null``, listed under ``nonfinite_values`` (``obj`` must then be a
    dict, as every JSON file of the toolkit is). Objects JSON has no type for are written as str.
    """
    clean, found = strict_json(obj)
    if found:
        if not isinstance(clean, dict) or NONFINITE_KEY in clean:
            raise ValueError(f"cannot record the non-finite values of {path}: the JSON is not a dict "
                             f"or already has a {NONFINITE_KEY!r} key")
        clean[NONFINITE_KEY] = found
    text = json.dumps(clean, indent=2, sort_keys=False, default=str, allow_nan=False)
    atomic_write_text(path, text + "\n")


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` atomically."""
    _atomic_write(Path(path), lambda handle: torch.save(obj, handle))


def atomic_savefig(fig: Any, path: str | Path, **kwargs: Any) -> None:
    """Save a matplotlib figure atomically; the format comes from the file suffix."""
    path = Path(path)
    kwargs.setdefault("format", path.suffix.lstrip("."))
    _atomic_write(path, lambda handle: fig.savefig(handle, **kwargs))


def write_csv(path: str | Path, rows: list[Mapping[str, Any]], columns: list[str] | None = None) -> None:
    """Write a whole CSV table atomically (used to append: rewrite with the new row added).

    Rewriting is how a row is appended whole: a reader sees the table before or after the row,
    never half a line. Floats are written with ``repr`` precision, so they read back exactly.
    """
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
