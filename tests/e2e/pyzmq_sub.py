#!/usr/bin/python3
"""A plain pyzmq SUB reading plh-pub's data plane, written only from the SPEC's wire
format: prints each message payload on its own line and exits at end of stream.
Usage: pyzmq_sub.py ENDPOINT"""
import struct
import sys

import zmq

MAGIC = 0x31484C50
EOS, BATCH = 1, 2

ctx = zmq.Context()
sock = ctx.socket(zmq.SUB)
sock.setsockopt(zmq.SUBSCRIBE, b"")
sock.setsockopt(zmq.RCVTIMEO, 10000)
sock.connect(sys.argv[1])
print("connected", file=sys.stderr, flush=True)
out = sys.stdout.buffer
expected = None
while True:
    frame = sock.recv()
    magic, flags, seq, ts_ns, count, reserved = struct.unpack_from("<IIQqII", frame, 0)
    assert magic == MAGIC, "bad header"  # reserved (offset 28) is the stream id: ignored
    assert ts_ns > 0
    if flags & EOS:
        assert expected is None or seq == expected, (seq, expected)
        break
    if expected is not None:
        assert seq == expected, (seq, expected)
    if flags & BATCH:
        pos = 32
        for _ in range(count):
            (n,) = struct.unpack_from("<I", frame, pos)
            pos += 4
            out.write(frame[pos:pos + n] + b"\n")
            pos += n
        assert pos == len(frame)
    else:
        assert count == 1
        out.write(frame[32:] + b"\n")
    expected = seq + count
out.flush()
