"""The Blobs primitive as files in a directory.

Used by the embedded engine (``<data_dir>/blobs``) and by any deployment whose
processes share a directory. Each object is **one file** holding a one-line
JSON header (key, size, ETag, content type, modification time, user metadata)
and then the bytes. Data and metadata therefore change together: a ``put``
writes a temporary file, fsyncs it, and ``os.replace``-s it over the old one
(then fsyncs the directory), so a reader in any process sees the old object
or the new one, never half of either, and a crash never leaves a torn object.

Layout. A key's ``/``-separated segments become directories, but every name
gets a suffix: ``.d`` for a directory segment, ``.o`` for the object itself.
Without it the keys ``img`` and ``img/a.png`` would need ``img`` to be both a
file and a directory. A segment too long for a file name once suffixed is
replaced by a hash of itself (the true key is in the header). So
``site/index.html`` lives at ``site.d/index.html.o``. Temporary files live in
``.tmp/`` at the root, a name no suffixed segment can take.

Keys are checked by :func:`reflow.backends.memory.check_blob_key` (no empty,
``.`` or ``..`` segments, no NUL, no leading ``/``): the same rule on every
engine, and the one that keeps a key inside the root.

``list`` walks the part of the tree the prefix selects, reads each header and
sorts by key: objects come back in byte order of their keys, as S3 lists them.

All file work runs in a worker thread, so the event loop never waits on a disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from reflow.backends.memory import check_blob_key, etag_of
from reflow.backends.protocols import Blob, BlobInfo
from reflow.clock import SYSTEM_CLOCK, Clock

__all__ = ["FileBlobs"]

_DIR, _OBJ = ".d", ".o"
_TMP = ".tmp"
_MAX_NAME = 240  # bytes: below every common file system's 255-byte name limit
_HEADER_LIMIT = 1 << 20  # a header longer than this is not one of ours


def _name(segment: str, suffix: str) -> str:
    if len(segment.encode()) + len(suffix) > _MAX_NAME:
        segment = "~" + hashlib.sha256(segment.encode()).hexdigest()
    return segment + suffix


def _decoded(name: str, suffix: str) -> str | None:
    """The segment a file name stands for; None when it was hashed."""
    segment = name[: -len(suffix)]
    return None if segment.startswith("~") and len(segment) == 65 else segment


class FileBlobs:
    """Objects stored as files under ``root``."""

    def __init__(self, root: Path, clock: Clock = SYSTEM_CLOCK) -> None:
        self.root = root
        self._clock = clock

    def path_of(self, key: str) -> Path:
        """Where the object under ``key`` lives (after checking the key)."""
        check_blob_key(key)
        *dirs, last = key.split("/")
        return self.root.joinpath(*(_name(d, _DIR) for d in dirs), _name(last, _OBJ))

    async def put(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
    ) -> BlobInfo:
        """Store an object atomically, replacing any under ``key``."""
        target = self.path_of(key)
        info = BlobInfo(
            key=key,
            size=len(data),
            etag=etag_of(data),
            content_type=content_type,
            modified=self._clock.time(),
            metadata=dict(metadata or {}),
        )
        await asyncio.to_thread(self._write, target, _header(info), bytes(data))
        return info

    async def get(self, key: str) -> Blob | None:
        """The object, or None."""
        return await asyncio.to_thread(_read, self.path_of(key), True)

    async def head(self, key: str) -> BlobInfo | None:
        """The object's information without its bytes, or None."""
        blob = await asyncio.to_thread(_read, self.path_of(key), False)
        return None if blob is None else blob.info

    async def list(
        self, prefix: str = "", *, start_after: str | None = None, limit: int | None = None
    ) -> list[BlobInfo]:
        """Objects whose key starts with ``prefix``, in key order."""
        infos = await asyncio.to_thread(_list, self.root, prefix)
        if start_after is not None:
            infos = [i for i in infos if i.key > start_after]
        return infos if limit is None else infos[: max(0, limit)]

    async def delete(self, key: str) -> bool:
        """Remove an object; whether it existed."""
        return await asyncio.to_thread(self._delete, self.path_of(key))

    # --- on the worker thread ---------------------------------------------

    def _write(self, target: Path, header: bytes, data: bytes) -> None:
        temp_dir = self.root / _TMP
        temp_dir.mkdir(parents=True, exist_ok=True)
        temp = temp_dir / f"{uuid.uuid4().hex}.part"
        try:
            with open(temp, "wb") as handle:
                handle.write(header)
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            # A concurrent delete may remove an emptied parent between our
            # mkdir and the rename; then we simply make it again.
            for attempt in range(5):
                _make_dirs(target.parent)
                try:
                    os.replace(temp, target)
                    break
                except FileNotFoundError:
                    if attempt == 4:
                        raise
            _fsync_dir(target.parent)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()

    def _delete(self, path: Path) -> bool:
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError):
            return False
        # Drop the directories the object leaves empty (rmdir refuses a
        # non-empty one, so a concurrent put into them is safe).
        parent = path.parent
        while parent != self.root and self.root in parent.parents:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent
        return True


def _read(path: Path, with_data: bool) -> Blob | None:
    try:
        with open(path, "rb") as handle:
            info = _parse_header(handle.readline(_HEADER_LIMIT), path)
            data = handle.read() if with_data else b""
    except (FileNotFoundError, NotADirectoryError):
        return None
    return Blob(info, data)


def _list(root: Path, prefix: str) -> list[BlobInfo]:
    # Descend through the prefix's complete segments; walk what is below.
    *dirs, partial = prefix.split("/")
    start = root.joinpath(*(_name(d, _DIR) for d in dirs))
    infos: list[BlobInfo] = []
    for path in _walk(start, partial):
        blob = _read(path, False)
        if blob is not None and blob.info.key.startswith(prefix):
            infos.append(blob.info)
    infos.sort(key=lambda i: i.key)
    return infos


def _walk(directory: Path, partial: str) -> Iterator[Path]:
    """Object files under ``directory``; at the top, only names that can start
    with ``partial`` (hashed names always qualify: their key is unknown)."""
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        for suffix in (_DIR, _OBJ):
            if not entry.name.endswith(suffix):
                continue
            segment = _decoded(entry.name, suffix)
            if segment is not None and not segment.startswith(partial):
                continue
            if suffix == _OBJ and entry.is_file():
                yield Path(entry.path)
            elif suffix == _DIR and entry.is_dir():
                yield from _walk(Path(entry.path), "")


def _header(info: BlobInfo) -> bytes:
    fields: dict[str, Any] = {
        "key": info.key,
        "size": info.size,
        "etag": info.etag,
        "content_type": info.content_type,
        "modified": info.modified,
        "metadata": dict(info.metadata),
    }
    # json.dumps escapes newlines, so the header is exactly one line.
    return json.dumps(fields, separators=(",", ":")).encode() + b"\n"


def _parse_header(line: bytes, path: Path) -> BlobInfo:
    try:
        fields = json.loads(line)
        return BlobInfo(
            key=fields["key"],
            size=fields["size"],
            etag=fields["etag"],
            content_type=fields["content_type"],
            modified=fields["modified"],
            metadata=fields["metadata"],
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is not a reflow blob file: bad header ({exc})") from None


def _make_dirs(directory: Path) -> None:
    """``mkdir -p``, fsyncing each new directory's parent so the new entries
    survive a crash along with the object renamed into them."""
    missing: list[Path] = []
    while not directory.is_dir():
        missing.append(directory)
        directory = directory.parent
    for new in reversed(missing):
        with contextlib.suppress(FileExistsError):
            new.mkdir()
        _fsync_dir(new.parent)


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories can't be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
