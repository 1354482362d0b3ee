"""The runtime's end of a worker's socket (sandbox.Connection), against a socket pair."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

from reflow.functions import wire
from reflow.functions.sandbox import Connection


async def test_frames_that_arrive_together_are_read_one_at_a_time() -> None:
    left, right = socket.socketpair()
    with left:
        connection = Connection(right)
        left.sendall(wire.encode(wire.CALL, {"c": "s"}) + wire.encode(wire.RESULT, [1, 2]))
        assert await connection.read() == (wire.CALL, {"c": "s"})
        assert await connection.read() == (wire.RESULT, [1, 2])
        connection.close()


async def test_a_frame_that_arrives_in_pieces_is_joined() -> None:
    left, right = socket.socketpair()
    big = "x" * (3 * 64 * 1024)  # more than one recv asks for, and than the socket holds
    data = wire.encode(wire.RESULT, big) + wire.encode(wire.ERROR, {"e": 7})
    with left:
        connection = Connection(right)
        left.sendall(data[:3])  # part of the header: the read must wait for the rest
        reading = asyncio.create_task(connection.read())
        sender = threading.Thread(target=left.sendall, args=(data[3:],))
        sender.start()
        try:
            assert await reading == (wire.RESULT, big)
            assert await connection.read() == (wire.ERROR, {"e": 7})
        finally:
            sender.join()
            connection.close()


async def test_a_frame_written_is_one_the_worker_reads() -> None:
    left, right = socket.socketpair()
    with left:
        connection = Connection(right)
        await connection.send(wire.encode(wire.REPLY, {"ok": "v"}))
        assert wire.FrameReader(left).read() == (wire.REPLY, {"ok": "v"})
        connection.close()


async def test_end_of_stream_mid_frame_is_a_connection_error() -> None:
    left, right = socket.socketpair()
    connection = Connection(right)
    left.sendall(wire.encode(wire.RESULT, "abcdef")[:7])
    left.close()
    with pytest.raises(ConnectionError):
        await connection.read()
    connection.close()


async def test_a_header_past_the_limit_is_a_connection_error() -> None:
    left, right = socket.socketpair()
    with left:
        connection = Connection(right)
        left.sendall(wire.HEADER.pack(wire.MAX_FRAME + 1, wire.RESULT))
        with pytest.raises(ConnectionError, match="corrupt"):
            await connection.read()
        connection.close()


async def test_at_eof_sees_a_closed_peer_without_consuming_anything() -> None:
    left, right = socket.socketpair()
    connection = Connection(right)
    assert not connection.at_eof()  # open and idle
    left.sendall(wire.encode(wire.RESULT, 1))
    assert not connection.at_eof()  # a frame waits: not the end
    assert await connection.read() == (wire.RESULT, 1)  # and the peek took none of it
    left.close()
    assert connection.at_eof()
    connection.close()
    assert connection.at_eof()


async def test_closing_during_a_read_ends_it_and_frees_the_socket_after_the_wait() -> None:
    left, right = socket.socketpair()
    with left:
        connection = Connection(right)
        reading = asyncio.create_task(connection.read())
        await asyncio.sleep(0)  # the read is now waiting on the selector
        connection.close()
        assert right.fileno() != -1  # still watched: not closed under the event loop
        with pytest.raises(ConnectionError):
            await reading
        assert right.fileno() == -1
        assert left.recv(1) == b""  # the worker's side sees end of stream
        # The descriptor's number, reused at once, works: nothing of the old wait is left.
        again_left, again_right = socket.socketpair()
        with again_left:
            again = Connection(again_right)
            again_left.sendall(wire.encode(wire.RESULT, "next"))
            assert await again.read() == (wire.RESULT, "next")
            again.close()


async def test_a_closed_connection_refuses_to_send_or_read() -> None:
    left, right = socket.socketpair()
    with left:
        connection = Connection(right)
        connection.close()
        assert right.fileno() == -1
        with pytest.raises(ConnectionError):
            await connection.send(wire.encode(wire.INVOKE, {}))
        with pytest.raises(ConnectionError):
            await connection.read()
