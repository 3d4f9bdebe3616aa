#!/usr/bin/python3
"""A pipeline worker in pyzmq, written only from docs/protocol.md "Pipeline": a DEALER
that asks for WINDOW messages at a time, prints each job on its own line, confirms it,
and says bye at end of stream.
Usage: pyzmq_worker.py ENDPOINT [WINDOW]"""
import struct
import sys

import zmq

MAGIC, CREDIT_MAGIC = 0x31484C50, 0x43484C50
EOS, BATCH, BYE = 1, 2, 1

sock = zmq.Context().socket(zmq.DEALER)
sock.setsockopt(zmq.RCVTIMEO, 20000)
sock.connect(sys.argv[1])
window = int(sys.argv[2]) if len(sys.argv) > 2 else 1
done = 0


def credit(flags=0, room=window):
    sock.send(struct.pack("<IIQQ", CREDIT_MAGIC, flags, done, room))


credit()
out = sys.stdout.buffer
while True:
    frame = sock.recv()
    magic, flags, seq, ts_ns, count, _stream = struct.unpack_from("<IIQqII", frame, 0)
    assert magic == MAGIC, "bad header"
    if flags & EOS:
        credit(BYE, 0)
        break
    if flags & BATCH:
        pos = 32
        for _ in range(count):
            (n,) = struct.unpack_from("<I", frame, pos)
            out.write(frame[pos + 4:pos + 4 + n] + b"\n")
            pos += 4 + n
    else:
        out.write(frame[32:] + b"\n")
    out.flush()
    done += count
    credit()
sock.close(linger=1000)
