#!/usr/bin/python3
"""A plain pyzmq publisher feeding plh-sub --connect, written only from the SPEC's wire
format. Prints its endpoint on stdout, waits for one subscriber, then sends: single
frames, a batch frame, malformed frames (wrong magic, short header, overrunning batch)
that plh-sub must skip, and the end-of-stream marker.
Usage: pyzmq_pub.py"""
import struct
import sys
import time

import zmq

MAGIC = 0x31484C50


def header(flags, seq, count):
    return struct.pack("<IIQqII", MAGIC, flags, seq, time.time_ns(), count, 0)


ctx = zmq.Context()
sock = ctx.socket(zmq.XPUB)  # a PUB that also tells us when the subscriber arrived
sock.bind("tcp://127.0.0.1:0")
print(sock.getsockopt_string(zmq.LAST_ENDPOINT), flush=True)
sock.setsockopt(zmq.RCVTIMEO, 10000)
sub = sock.recv()  # the subscription
assert sub[0] == 1
sock.send(header(0, 1, 1) + b"one")
sock.send(header(0, 2, 1) + b"two")
sock.send(b"XLH1" + header(0, 3, 1)[4:] + b"bad magic")
sock.send(header(0, 3, 1)[:20])  # short header
sock.send(header(2, 3, 2) + struct.pack("<I", 1000) + b"overrun")
batch = b"".join(struct.pack("<I", len(p)) + p for p in (b"three", b"", b"five"))
sock.send(header(2, 3, 3) + batch)
sock.send(header(1, 6, 0))  # end of stream
# close(linger=...) delivers what is queued before the process exits
sock.close(linger=2000)
ctx.term()
