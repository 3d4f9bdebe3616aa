#!/usr/bin/python3
"""pyzmq baseline for run_pubsub_bench.sh: one ZeroMQ message per line over PUSH/PULL.

    pyzmq_relay.py recv ENDPOINT OUTFILE   bind (then "ready" on stderr), write each message as a line
    pyzmq_relay.py send ENDPOINT INFILE    connect, send each line (newline stripped)

End of stream is one message b"\\0END" (the bench input never contains NUL bytes).
Written the way a lab user would write it: straightforward, no batching tricks.
"""
import sys

import zmq

END = b"\0END"


def recv(endpoint, path):
    ctx = zmq.Context()
    s = ctx.socket(zmq.PULL)
    s.bind(endpoint)
    print("pyzmq_relay: ready", file=sys.stderr, flush=True)
    n = 0
    with open(path, "wb", buffering=1 << 18) as out:
        write = out.write
        r = s.recv
        while True:
            m = r()
            if m == END:
                break
            write(m + b"\n")
            n += 1
    s.close()
    ctx.term()
    print(f"pyzmq_relay: received {n} messages", file=sys.stderr)


def send(endpoint, path):
    ctx = zmq.Context()
    s = ctx.socket(zmq.PUSH)
    s.connect(endpoint)
    n = 0
    snd = s.send
    with open(path, "rb", buffering=1 << 18) as inp:
        for line in inp:
            if line.endswith(b"\n"):
                line = line[:-1]
            snd(line)
            n += 1
    snd(END)
    s.close(linger=-1)
    ctx.term()
    print(f"pyzmq_relay: sent {n} messages", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in ("send", "recv"):
        sys.exit("usage: pyzmq_relay.py send|recv ENDPOINT FILE")
    (recv if sys.argv[1] == "recv" else send)(sys.argv[2], sys.argv[3])
