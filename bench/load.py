"""A lean HTTP/1.1 load generator: pre-built requests on keep-alive connections, one asyncio task per client.

Lean on purpose: on a 2-core machine the client shares the CPU with the server, so every microsecond it spends is
taken from the server being measured.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

import numpy as np


def multipart_request(host: str, port: int, path: str, npy: bytes, spacing: str) -> bytes:
    """The complete bytes of one POST with a .npy patch and its spacing, as any HTTP client would send them."""
    boundary = uuid.uuid4().hex
    body = b"".join(
        [
            f'--{boundary}\r\nContent-Disposition: form-data; name="spacing"\r\n\r\n{spacing}\r\n'.encode(),
            f'--{boundary}\r\nContent-Disposition: form-data; name="patch"; filename="patch.npy"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode(),
            npy,
            f"\r\n--{boundary}--\r\n".encode(),
        ]
    )
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


@dataclass
class LoadResult:
    concurrency: int
    requests: int
    seconds: float
    latencies_s: np.ndarray
    statuses: dict[int, int]

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q) * 1000)


class Connection:
    """One keep-alive connection; reopened, as any HTTP client does, after an answer that says Connection: close."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, port: int) -> None:
        self.reader, self.writer = reader, writer
        self.host, self.port = host, port
        self.closing = False  # the server's last answer said Connection: close

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, host, port)

    async def send(self, request: bytes) -> tuple[int, bytes]:
        if self.closing:
            self.writer.close()
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            self.closing = False
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
            elif line.lower() == b"connection: close":
                self.closing = True
        body = await self.reader.readexactly(length)
        return status, body

    def close(self) -> None:
        self.writer.close()


async def run_load(
    host: str, port: int, request: bytes | list[bytes], concurrency: int, total: int, warmup: int
) -> LoadResult:
    """`warmup` requests (not measured), then `total` requests spread over `concurrency` closed-loop clients.
    With a list of requests, the clients take them in turn."""
    requests = [request] if isinstance(request, bytes) else request
    conns = [await Connection.open(host, port) for _ in range(concurrency)]
    sent = 0

    def next_request() -> bytes:
        nonlocal sent
        sent += 1
        return requests[sent % len(requests)]

    try:

        async def warm(conn: Connection) -> None:
            for _ in range(max(warmup // concurrency, 1)):
                await conn.send(next_request())

        await asyncio.gather(*(warm(c) for c in conns))
        latencies: list[float] = []
        statuses: dict[int, int] = {}
        remaining = total

        async def client(conn: Connection) -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                t = time.perf_counter()
                status, _ = await conn.send(next_request())
                latencies.append(time.perf_counter() - t)
                statuses[status] = statuses.get(status, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(client(c) for c in conns))
        seconds = time.perf_counter() - started
    finally:
        for c in conns:
            c.close()
    return LoadResult(concurrency, len(latencies), seconds, np.array(latencies), statuses)
