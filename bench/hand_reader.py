"""The strongest reader written by hand, for the bench's comparison with forensics.capture.

Raw socket + hiredis (no client library), every state's ids read in pipelined windows of
1,000, the job hashes read by pipelined HGETALL in batches of 1,000 with two batches in
flight (the next batch is on the wire while the previous one is parsed), the garbage
collector off during the read. It builds the same typed jobs table as a capture (the same
decoder, ``forensics.decode.decode_jobs``, with the same default redaction), so the two
differ only in how they read.

    python bench/hand_reader.py redis://127.0.0.1:6379/0 bull:bench:
"""
from __future__ import annotations

import gc
import socket
import sys
from urllib.parse import urlparse

import hiredis
import pandas as pd

from forensics.capture.tables import STATE_KEYS
from forensics.decode import decode_jobs

WINDOW = 1000
BATCH = 1000
DECODE = 100_000


def pack(*args) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


class Conn:
    def __init__(self, url: str):
        u = urlparse(url)
        self.sock = socket.create_connection((u.hostname, u.port or 6379))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = hiredis.Reader(encoding="utf-8", errors="replace")
        db = int((u.path or "/0").strip("/") or 0)
        if db:
            self.send([pack("SELECT", db)])
            self.recv(1)

    def send(self, packed: list[bytes]) -> None:
        self.sock.sendall(b"".join(packed))

    def recv(self, n: int) -> list:
        out = []
        gets, feed, recv = self.reader.gets, self.reader.feed, self.sock.recv
        while len(out) < n:
            r = gets()
            if r is False:
                feed(recv(1 << 20))
            else:
                out.append(r)
        return out

    def pipelined(self, cmds: list[bytes], batch: int) -> list:
        """Batches of ``batch`` commands, two in flight."""
        out: list = []
        batches = [cmds[i:i + batch] for i in range(0, len(cmds), batch)]
        if not batches:
            return out
        self.send(batches[0])
        for k, b in enumerate(batches):
            if k + 1 < len(batches):
                self.send(batches[k + 1])
            out.extend(self.recv(len(b)))
        return out


def main(url: str, base: str) -> pd.DataFrame:
    gc.disable()
    c = Conn(url)
    prefix, queue = base.rstrip(":").split(":", 1)
    lengths = c.pipelined([pack("LLEN" if kind == "list" else "ZCARD", base + sfx) for sfx, kind, _ in STATE_KEYS],
                          BATCH)
    frames = []
    for (sfx, kind, state), n in zip(STATE_KEYS, lengths):
        if not n:
            continue
        if kind == "list":
            cmds = [pack("LRANGE", base + sfx, a, a + WINDOW - 1) for a in range(0, n, WINDOW)]
            ids = [x for w in c.pipelined(cmds, 50) for x in w]
            score = [None] * len(ids)
        else:
            cmds = [pack("ZRANGE", base + sfx, a, a + WINDOW - 1, "WITHSCORES") for a in range(0, n, WINDOW)]
            flat = [x for w in c.pipelined(cmds, 50) for x in w]   # RESP2: member, score, member, ...
            ids = flat[0::2]
            score = [float(s) for s in flat[1::2]]
        frames.append(pd.DataFrame({"job_id": ids, "score": score, "state": state}))
    ids = pd.concat(frames, ignore_index=True).drop_duplicates("job_id")
    ids = ids[~ids["job_id"].str.startswith("0:")]  # BullMQ's markers in the wait list
    ids = ids.assign(prefix=prefix, queue=queue, flavor="bullmq").reset_index(drop=True)
    hashes = c.pipelined([pack("HGETALL", base + j) for j in ids["job_id"].tolist()], BATCH)
    parts = []
    for i in range(0, len(ids), DECODE):
        part = ids.iloc[i:i + DECODE]
        rows = [dict(zip(r[::2], r[1::2])) for r in hashes[i:i + DECODE]]   # RESP2: field, value, ...
        keep = [bool(r) for r in rows]
        jobs, _payloads = decode_jobs(part[keep], [r for r, k in zip(rows, keep) if k], redact=True)
        parts.append(jobs)
        hashes[i:i + DECODE] = [None] * len(rows)   # free the replies as they are decoded
        del rows
    jobs = pd.concat(parts, ignore_index=True)
    gc.enable()
    return jobs


if __name__ == "__main__":
    df = main(sys.argv[1], sys.argv[2])
    print(len(df))
