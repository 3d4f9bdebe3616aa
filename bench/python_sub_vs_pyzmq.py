#!/usr/bin/env python3
"""A Python plh.Subscriber against a plain pyzmq SUB reading the same plh-pub stream.

Each round feeds the same file of --lines lines to a fresh plh-pub (one channel per run,
-w 1 so it starts when the reader is connected; --hwm large enough that nothing is
dropped), read once by each reader, one after the other:
  pyzmq      zmq.SUB on the channel's endpoint (from plh.broker().info), decoding the
             wire (docs/protocol.md: 32-byte header, batches of u32 length + payload)
             into one bytes object per line - what a pyzmq user writes by hand
  plh-iter   `for m in plh.Subscriber(...)`: a Message (seq, ts_ns, bytes) per line
  plh-many   plh.Subscriber.recv_many(): lists of bytes, one C call per batch
Time runs from the first message to the end of stream, as wall time and as the reader
process's CPU time (time.process_time: this thread and libzmq's I/O thread). The wall rate
is bounded by plh-pub when the reader is faster and swings with the machine's load; lines
per CPU-second is each reader's own cost, the figure the ratios use. Prints both per
reader (median of --rounds).

  PYTHONPATH=build/python /usr/bin/python3 bench/python_sub_vs_pyzmq.py [--lines 1000000] [--rounds 3] [--bin build/bin]
"""
import argparse
import json
import os
import select
import statistics
import struct
import subprocess
import tempfile
import time

import zmq

import plh

MAGIC = 0x31484C50
EOS, BATCH = 1, 2


def read_pyzmq(endpoint: str, n: int) -> tuple:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.setsockopt(zmq.RCVTIMEO, 30000)
    sock.connect(endpoint)
    out = []
    t0 = None
    unpack = struct.Struct("<IIQqII").unpack_from
    ulen = struct.Struct("<I").unpack_from
    while True:
        frame = sock.recv()
        magic, flags, seq, ts_ns, count, _ = unpack(frame, 0)
        if t0 is None and count:
            t0, c0 = time.perf_counter(), time.process_time()
        if flags & EOS:
            break
        if flags & BATCH:
            pos = 32
            for _ in range(count):
                (k,) = ulen(frame, pos)
                pos += 4
                out.append(frame[pos:pos + k])
                pos += k
        elif count:
            out.append(frame[32:])
    t1, c1 = time.perf_counter(), time.process_time()
    sock.close(0)
    ctx.term()
    return len(out), t1 - t0, c1 - c0, out[-1] if out else b""


def read_plh(sub: plh.Subscriber, many: bool) -> tuple:
    t0 = None
    got, last = 0, b""
    if many:
        while True:
            batch = sub.recv_many(8192)
            if t0 is None:
                t0, c0 = time.perf_counter(), time.process_time()
            if not batch:
                break
            got += len(batch)
            last = batch[-1]
    else:
        for m in sub:
            if t0 is None:
                t0, c0 = time.perf_counter(), time.process_time()
            got += 1
            last = m.data
    return got, time.perf_counter() - t0, time.process_time() - c0, last


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "..", "build", "bin"))
    a = ap.parse_args()
    broker = subprocess.Popen([os.path.join(a.bin, "plh-broker"), "--endpoint", "tcp://127.0.0.1:0", "-q"],
                              stdout=subprocess.PIPE)
    ready, _, _ = select.select([broker.stdout], [], [], 10)
    assert ready, "no plh-broker"
    ep = json.loads(broker.stdout.readline())["endpoint"]
    tmp = tempfile.NamedTemporaryFile(prefix="plhbench-lines-", delete=False)
    for i in range(a.lines):
        tmp.write(b"line %07d\n" % i)
    tmp.close()
    want_last = b"line %07d" % (a.lines - 1)
    rates = {"pyzmq": [], "plh-iter": [], "plh-many": []}
    cpu = {m: [] for m in rates}
    try:
        for r in range(a.rounds):
            for mode in rates:
                ch = f"bench-{os.getpid()}-{r}-{mode}"
                with open(tmp.name, "rb") as f:
                    pub = subprocess.Popen([os.path.join(a.bin, "plh-pub"), ch, "--broker", ep, "-w", "1",
                                            "-W", "60s", "--hwm", "1000000"], stdin=f, stderr=subprocess.PIPE)
                if mode == "pyzmq":
                    deadline = time.monotonic() + 10
                    while True:  # the channel appears when plh-pub registered
                        try:
                            info = plh.broker(ep).info(ch)
                            break
                        except plh.NotFound:
                            if time.monotonic() > deadline:
                                raise
                            time.sleep(0.01)
                    got, secs, cpus, last = read_pyzmq(info["endpoint"], a.lines)
                else:
                    with plh.Subscriber(ch, wait=True, broker=ep, wait_timeout=10) as sub:
                        got, secs, cpus, last = read_plh(sub, mode == "plh-many")
                _, err = pub.communicate(timeout=60)
                assert got == a.lines and last == want_last, (mode, got, last, err)
                rates[mode].append(got / secs)
                cpu[mode].append(got / cpus)
    finally:
        os.unlink(tmp.name)
        broker.terminate()
        broker.wait(10)
    med = {m: statistics.median(v) for m, v in rates.items()}
    mc = {m: statistics.median(v) for m, v in cpu.items()}
    print(f"{a.lines} lines, median of {a.rounds}, M lines per second of wall time / per CPU-second: " +
          ", ".join(f"{m} {med[m] / 1e6:.2f} / {mc[m] / 1e6:.2f}" for m in med) +
          f"; per CPU-second plh-many/pyzmq {mc['plh-many'] / mc['pyzmq']:.2f}, plh-iter/pyzmq "
          f"{mc['plh-iter'] / mc['pyzmq']:.2f} (wall {med['plh-many'] / med['pyzmq']:.2f}, {med['plh-iter'] / med['pyzmq']:.2f})")

if __name__ == "__main__":
    main()
