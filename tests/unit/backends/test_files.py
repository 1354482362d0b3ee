"""The files engine for Blobs: layout, atomic replace, odd keys, listing."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from reflow.backends.files import FileBlobs
from reflow.backends.memory import etag_of
from reflow.testing import FakeClock


@pytest.fixture
def blobs(tmp_path: Path) -> FileBlobs:
    return FileBlobs(tmp_path / "blobs", FakeClock(start=1_000.0))


async def test_a_key_and_a_key_below_it_can_both_exist(blobs: FileBlobs) -> None:
    await blobs.put("img", b"file")
    await blobs.put("img/a.png", b"below")
    first, second = await blobs.get("img"), await blobs.get("img/a.png")
    assert first is not None and first.data == b"file"
    assert second is not None and second.data == b"below"
    assert [i.key for i in await blobs.list("img")] == ["img", "img/a.png"]


async def test_objects_live_under_suffixed_names(blobs: FileBlobs) -> None:
    await blobs.put("site/index.html", b"<p>")
    assert (blobs.root / "site.d" / "index.html.o").is_file()
    assert blobs.path_of("a/b/c") == blobs.root / "a.d" / "b.d" / "c.o"


async def test_a_replace_leaves_no_temporary_files(blobs: FileBlobs) -> None:
    await asyncio.gather(*(blobs.put("hot", bytes([65 + i]) * (1000 + i)) for i in range(20)))
    blob = await blobs.get("hot")
    assert blob is not None
    # Whichever write won, data and header belong to the same write.
    assert blob.data == blob.data[:1] * len(blob.data)
    assert blob.info.size == len(blob.data) == 1000 + blob.data[0] - 65
    assert blob.info.etag == etag_of(blob.data)
    assert os.listdir(blobs.root / ".tmp") == []


async def test_a_long_segment_is_stored_under_a_hash_and_listed_by_its_key(
    blobs: FileBlobs,
) -> None:
    long_key = "dir/" + "é" * 200  # 400 bytes: too long for one file name
    await blobs.put(long_key, b"x", metadata={"k": "v"})
    await blobs.put("dir/short", b"y")
    blob = await blobs.get(long_key)
    assert blob is not None and blob.data == b"x" and dict(blob.info.metadata) == {"k": "v"}
    assert [i.key for i in await blobs.list("dir/")] == ["dir/short", long_key]
    assert [i.key for i in await blobs.list("dir/é")] == [long_key]
    assert await blobs.delete(long_key) is True
    assert await blobs.get(long_key) is None


async def test_modified_comes_from_the_clock(blobs: FileBlobs) -> None:
    info = await blobs.put("a", b"1")
    assert info.modified == 1_000.0
    head = await blobs.head("a")
    assert head is not None and head.modified == 1_000.0


async def test_delete_removes_directories_it_empties_but_not_the_root(blobs: FileBlobs) -> None:
    await blobs.put("a/b/c/d", b"1")
    await blobs.put("a/keep", b"2")
    assert await blobs.delete("a/b/c/d") is True
    assert not (blobs.root / "a.d" / "b.d").exists()
    assert (blobs.root / "a.d" / "keep.o").is_file()
    assert await blobs.delete("a/keep") is True
    assert blobs.root.is_dir() and not (blobs.root / "a.d").exists()


async def test_metadata_with_newlines_and_unicode_round_trips(blobs: FileBlobs) -> None:
    metadata = {"title": "line one\nline two", "author": "Zoë"}
    await blobs.put("doc", b"\n\nbody\n", content_type="text/plain", metadata=metadata)
    blob = await blobs.get("doc")
    assert blob is not None
    assert blob.data == b"\n\nbody\n"
    assert dict(blob.info.metadata) == metadata


async def test_a_partial_prefix_lists_across_files_and_directories(blobs: FileBlobs) -> None:
    for key in ["ab", "abc/x", "abd", "b", "a-b"]:
        await blobs.put(key, b"")
    assert [i.key for i in await blobs.list("ab")] == ["ab", "abc/x", "abd"]
    assert [i.key for i in await blobs.list("a")] == ["a-b", "ab", "abc/x", "abd"]
    assert await blobs.list("nothing/") == []


async def test_a_key_below_an_object_is_absent_not_an_error(blobs: FileBlobs) -> None:
    await blobs.put("a", b"1")
    assert await blobs.get("a/b") is None
    assert await blobs.delete("a/b") is False


async def test_a_foreign_file_is_reported_with_its_path(blobs: FileBlobs) -> None:
    path = blobs.path_of("x")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not json\n")
    with pytest.raises(ValueError, match="x.o"):
        await blobs.get("x")


async def test_a_put_racing_the_delete_that_empties_its_directory_survives(
    blobs: FileBlobs,
) -> None:
    for round_ in range(30):
        await blobs.put("d/e/old", b"x")
        deleted, info = await asyncio.gather(
            blobs.delete("d/e/old"), blobs.put(f"d/e/new{round_}", b"y")
        )
        assert deleted is True
        blob = await blobs.get(info.key)
        assert blob is not None and blob.data == b"y"
    assert len(await blobs.list("d/e/")) == 30
