#!/usr/bin/env python3
"""1 MiB numpy frames through a shared-memory ring between two Python processes, against
the memcpy bandwidth of this machine (bench/shm_memcpy_bw.cpp, run by this script
before and after, same size and ring).

The writer process puts each frame in a slot with
  --write write   `w.write(frame)`: one memcpy in the library, or
  --write slot    `with w.slot(np.uint16, shape) as v: np.copyto(v, frame)`: numpy fills
                  the slot in place (as a camera driver would);
the reader process takes each frame as a zero-copy numpy view (`slot.array()`) and
  --consume copy  copies it out (np.copyto into a private array: one copy), or
  --consume sum   reads every byte once (a.sum(), no copy), or
  --consume none  touches nothing but the metadata (the cost of the ring itself).
Rate = frames x frame size / the reader's time from its first frame to the end of stream.

  PYTHONPATH=build/python /usr/bin/python3 bench/python_shm_frames.py [--frames 2000] [--slots 16]
      [--write write|slot] [--consume copy|sum|none]
"""
import argparse
import os
import re
import subprocess
import sys
import time

import numpy as np

import plh

HERE = os.path.dirname(os.path.abspath(__file__))


def memcpy_ring(bin_dir: str, size: int, slots: int) -> float:
    out = subprocess.run([os.path.join(bin_dir, "shm_memcpy_bw"), "--size", str(size), "--ring-slots", str(slots),
                          "--seconds", "1"], capture_output=True, text=True, check=True).stdout
    m = re.search(r"ring_gbs=([0-9.]+)", out)
    if not m:
        raise SystemExit(f"cannot read shm_memcpy_bw output:\n{out}")
    return float(m.group(1)) * 1e9


def writer(name: str, frames: int, shape, slots: int, mode: str) -> None:
    frame = np.arange(int(np.prod(shape)), dtype=np.uint16).reshape(shape)
    with plh.ShmWriter(name, slots=slots, slot_size=frame.nbytes, policy="sequential") as w:
        for _ in range(frames):
            if mode == "write":
                w.write(frame)
            else:
                with w.slot(np.uint16, shape) as v:
                    np.copyto(v, frame)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--slots", type=int, default=16)
    ap.add_argument("--size", type=int, default=1 << 20)
    ap.add_argument("--consume", choices=("copy", "sum", "none"), default="copy")
    ap.add_argument("--write", choices=("write", "slot"), default="write")
    ap.add_argument("--bin", default=os.path.join(HERE, "..", "build", "bin"))
    ap.add_argument("--writer", help=argparse.SUPPRESS)
    a = ap.parse_args()
    shape = (a.size // 2048, 1024)
    if a.writer:
        writer(a.writer, a.frames, shape, a.slots, a.write)
        return
    before = memcpy_ring(a.bin, a.size, a.slots)
    name = f"plhbench-frames-{os.getpid()}"
    proc = subprocess.Popen([sys.executable, __file__, "--writer", name, "--frames", str(a.frames),
                             "--slots", str(a.slots), "--size", str(a.size), "--write", a.write])
    deadline = time.monotonic() + 10
    while True:  # the writer creates the segment
        try:
            r = plh.ShmReader(name)
            break
        except plh.NotFound:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)
    out = np.empty(shape, np.uint16)
    n, t0 = 0, None
    while True:
        s = r.read(timeout=30)
        if s is None:
            break
        if t0 is None:
            t0 = time.perf_counter()
        arr = s.array()
        if a.consume == "copy":
            np.copyto(out, arr)
        elif a.consume == "sum":
            arr.sum()
        s.release()
        n += 1
    secs = time.perf_counter() - t0
    proc.wait(30)
    r.close()
    plh.remove_segment(name)
    after = memcpy_ring(a.bin, a.size, a.slots)
    bw = (n - 1) * a.size / secs  # frames after the first, which started the clock
    ref = (before + after) / 2
    print(f"{n} frames of {a.size >> 20} MiB, ring {a.slots}, write={a.write}, consume={a.consume}: {bw / 1e9:.2f} GB/s "
          f"= {100 * bw / ref:.0f}% of memcpy (ring, {before / 1e9:.2f} GB/s before, {after / 1e9:.2f} after)")


if __name__ == "__main__":
    main()
