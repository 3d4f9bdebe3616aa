#!/usr/bin/env python3
"""Python ShmReader cost per slot, the same measurement as `shm_throughput --single-process`
makes for the C++ reader: drain a full `sequential` ring of --slots slots of --size bytes
(filled by the Python writer, untimed), repeatedly, with
  read      ShmReader.read() + bytes(slot.data) + release, one slot per call
  read_many ShmReader.read_many(n) (one C call copies up to n slots)
and, with --frame-size, 1 MiB numpy frames: read() + slot.array() (zero copy) and
np.copyto into a private array, against a plain numpy memcpy of the same size.

  PYTHONPATH=build/python python3 bench/python_shm_read.py [--size 64] [--slots 4096] [--rounds 50]
"""
import argparse
import os
import time

import numpy as np

import plh


def fill(w, n, payload):
    for _ in range(n):
        w.write(payload)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--slots", type=int, default=4096)
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--frame-size", type=int, default=1 << 20)
    ap.add_argument("--frames", type=int, default=16)
    a = ap.parse_args()
    name = f"plhbench-py-{os.getpid()}"
    payload = b"x" * a.size
    results = {}
    with plh.ShmWriter(name, slots=a.slots, slot_size=a.size) as w, plh.ShmReader(name) as r:
        for mode in ("read", "read_many"):
            total, n = 0.0, 0
            for _ in range(a.rounds if mode == "read_many" else max(1, a.rounds // 5)):
                fill(w, a.slots, payload)
                t0 = time.perf_counter()
                if mode == "read":
                    for _ in range(a.slots):
                        s = r.read(1)
                        bytes(s.data)
                        s.release()
                else:
                    left = a.slots
                    while left:
                        left -= len(r.read_many(left, 1))
                total += time.perf_counter() - t0
                n += a.slots
            results[mode] = n / total
    plh.remove_segment(name)
    print(f"python {a.size}-byte slots, ring {a.slots}: read() {results['read'] / 1e6:.2f} M slots/s, "
          f"read_many({a.slots}) {results['read_many'] / 1e6:.2f} M slots/s")

    # 1 MiB frames: zero-copy array + a copy out, against memcpy bandwidth.
    fs = a.frame_size
    frame = np.arange(fs // 2, dtype=np.uint16)
    out = np.empty_like(frame)
    t0 = time.perf_counter()
    for _ in range(200):
        np.copyto(out, frame)
    memcpy_bw = 200 * fs / (time.perf_counter() - t0)
    with plh.ShmWriter(name, slots=a.frames, slot_size=fs) as w, plh.ShmReader(name) as r:
        total, n = 0.0, 0
        for _ in range(20):
            for _ in range(a.frames):
                with w.slot(np.uint16, (fs // 2,)) as v:
                    v[:] = frame
            t0 = time.perf_counter()
            for _ in range(a.frames):
                with r.read(1) as s:
                    np.copyto(out, s.array())
            total += time.perf_counter() - t0
            n += a.frames
    plh.remove_segment(name)
    bw = n * fs / total
    print(f"python {fs >> 20} MiB numpy frames: read()+array()+copy {bw / 1e9:.2f} GB/s = "
          f"{100 * bw / memcpy_bw:.0f}% of numpy memcpy {memcpy_bw / 1e9:.2f} GB/s (zero-copy view, one copy out)")


if __name__ == "__main__":
    main()
