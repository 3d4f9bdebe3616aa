"""plh.ShmWriter / plh.ShmReader against real shared-memory segments."""
import os
import subprocess
import threading
import time

import numpy as np
import pytest

import plh


def mapped_ranges(name):
    """Address ranges of /dev/shm/plh.NAME mapped in this process."""
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            if line.rstrip().endswith("/dev/shm/plh." + name):
                lo, hi = line.split()[0].split("-")
                out.append((int(lo, 16), int(hi, 16)))
    return out


def in_segment(name, addr):
    return any(lo <= addr < hi for lo, hi in mapped_ranges(name))


def test_bytes_round_trip_with_metadata(name):
    with plh.ShmWriter(name, slots=8, slot_size=1024, checksum="xxh3") as w:
        assert (w.slots, w.slot_size) == (8, 1024)
        assert w.write(b"hello", ts_ns=42, type_hash=7, dims=[1, 2, 3]) == 1
        assert w.write(bytearray(b"world")) == 2
        with plh.ShmReader(name) as r:
            s = r.read(timeout=1)
            assert (s.seq, s.ts_ns, s.size, s.type_hash, s.dims) == (1, 42, 5, 7, (1, 2, 3, 0))
            assert bytes(s.data) == b"hello"
            s.release()
            s = r.read(timeout=1)
            assert bytes(s.data) == b"world" and s.ts_ns > 0 and s.type_hash == 0


def test_numpy_frames_zero_copy(name):
    frame = np.arange(6 * 4, dtype=np.uint16).reshape(6, 4)
    with plh.ShmWriter(name, slots=4, slot_size=4096) as w, plh.ShmReader(name) as r:
        w.write(frame)
        with r.read(timeout=1) as s:
            assert s.type_hash == plh.type_hash_of(np.uint16, 2)
            assert s.dims == (6, 4, 0, 0)
            a = s.array()
            assert a.dtype == np.uint16 and a.shape == (6, 4)
            assert np.array_equal(a, frame)
            # zero copy: the array and the memoryview point into the mapped segment
            assert in_segment(name, a.__array_interface__["data"][0])
            assert np.shares_memory(a, np.frombuffer(s.data, dtype=np.uint8))
            with pytest.raises(ValueError):
                a[0, 0] = 1  # read-only
            with pytest.raises(TypeError):
                s.data[0] = 1
        with pytest.raises(plh.UsageError):
            s.data  # released at the end of the with block


def test_writer_slot_is_zero_copy(name):
    with plh.ShmWriter(name, slots=4, slot_size=1 << 16) as w, plh.ShmReader(name) as r:
        with w.slot(np.float32, (128, 64)) as view:
            assert view.shape == (128, 64) and view.flags.writeable
            assert in_segment(name, view.__array_interface__["data"][0])
            view[:] = 1.5
        with w.slot() as raw:  # bytes: set .size
            raw.buf[:3] = b"abc"
            raw.size = 3
        s = r.read(timeout=1)
        a = s.array()
        assert a.dtype == np.float32 and a.shape == (128, 64) and float(a.sum()) == 1.5 * 128 * 64
        s = r.read(timeout=1)
        assert bytes(s.data) == b"abc" and s.size == 3


def test_iteration_until_end_of_stream_and_read_many(name):
    w = plh.ShmWriter(name, slots=64, slot_size=64)
    r = plh.ShmReader(name)
    for i in range(10):
        w.write(b"m%d" % i)
    got = [bytes(r.read(1).data), bytes(r.read(1).data)]
    batch = r.read_many(100, timeout=1)
    assert len(batch) == 8 and list(batch.seq) == list(range(3, 11))
    got += list(batch)
    assert got == [b"m%d" % i for i in range(10)]
    for i in range(5):
        w.write(b"x%d" % i)
    w.close()  # end of stream
    assert [bytes(s.data) for s in r] == [b"x%d" % i for i in range(5)]
    assert r.read(timeout=1) is None and r.ended
    assert len(r.read_many(10, timeout=1)) == 0
    r.close()


def test_bad_input(name):
    with pytest.raises(plh.NotFound) as e:
        plh.ShmReader(name)
    assert e.value.code == 4
    with pytest.raises(plh.NotFound):
        plh.ShmWriter(name, create=False)
    with pytest.raises(plh.UsageError):
        plh.ShmWriter(name, slots=0)
    with pytest.raises(plh.UsageError):
        plh.ShmWriter(name, policy="fastest")
    with pytest.raises(plh.UsageError):
        plh.ShmWriter("bad/name")
    w = plh.ShmWriter(name, slots=2, slot_size=16, policy="latest")
    with pytest.raises(plh.Refused):
        plh.ShmWriter(name, slots=4, slot_size=16)  # another geometry (and a live writer)
    with pytest.raises(plh.UsageError):
        w.write(b"x" * 17)  # larger than a slot
    with pytest.raises(plh.UsageError):
        with w.slot(np.float64, (3,)):  # 24 bytes > 16
            pass
    with pytest.raises(plh.UsageError):
        w.write(b"x", dims=[1, 2, 3, 4, 5])
    with pytest.raises(plh.UsageError):
        w.write(np.zeros(2, dtype=[("a", "i4")]))  # structured dtype: no mapping
    r = plh.ShmReader(name)
    with pytest.raises(plh.Timeout):
        r.read(timeout=0.05)
    w.write(np.zeros(4, np.int32))
    s = r.read(timeout=1)
    with pytest.raises(plh.UsageError):
        s.array(np.float64, (3,))  # 24 bytes, slot has 16
    assert s.array(np.int16).shape == (8,)
    r.close()
    with pytest.raises(plh.UsageError):
        r.read()  # closed handle
    with pytest.raises(plh.UsageError):
        s.data
    w.close()
    with pytest.raises(plh.UsageError):
        w.write(b"x")
    w.close()  # twice is fine


def test_a_segment_that_is_not_plh(name):
    path = "/dev/shm/plh." + name
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    os.write(fd, b"not a plh segment" * 100)
    os.close(fd)
    with pytest.raises(plh.Error) as e:
        plh.ShmReader(name)
    assert e.value.code in (1, 6)
    with pytest.raises(plh.Error):
        plh.ShmWriter(name, create=False)


def test_read_releases_the_gil(name):
    with plh.ShmWriter(name, slots=4, slot_size=64) as w, plh.ShmReader(name) as r:
        ticks = [0]
        stop = threading.Event()

        def spin():
            while not stop.is_set():
                ticks[0] += 1

        # One C call waits the whole 0.5 s (no slicing): with the GIL held the other
        # thread would not advance at all meanwhile.
        old_slice, plh._SLICE_MS = plh._SLICE_MS, 500
        t = threading.Thread(target=spin)
        t.start()
        try:
            time.sleep(0.05)
            t0, n0 = time.monotonic(), ticks[0]
            time.sleep(0.2)  # the spinner's rate while this thread sleeps (GIL free)
            rate = (ticks[0] - n0) / (time.monotonic() - t0)
            before = ticks[0]
            with pytest.raises(plh.Timeout):
                r.read(timeout=0.5)
            during = ticks[0] - before
        finally:
            plh._SLICE_MS = old_slice
            stop.set()
            t.join()
        # Held GIL: the spinner runs only around the call (~5% of the time, measured).
        assert during > 0.3 * rate * 0.5, f"the other thread ran {during} loops during a 0.5 s read ({rate:.0f}/s when free)"

        # a read waiting in one thread gets a slot written from another
        def later():
            time.sleep(0.05)
            w.write(b"late")

        t = threading.Thread(target=later)
        t.start()
        s = r.read(timeout=5)
        t.join()
        assert bytes(s.data) == b"late"


def test_python_writer_to_plh_shm_read(name, bin_path):
    with plh.ShmWriter(name, slots=16, slot_size=256) as w:
        w.write(b"alpha")
        w.write(b"beta")
    out = subprocess.run([bin_path("plh-shm"), "read", name, "-W", "5s"], capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout == b"alpha\nbeta\n"


def test_plh_shm_write_to_python_reader(name, bin_path):
    data = b"".join(b"line %d\n" % i for i in range(100))
    out = subprocess.run([bin_path("plh-shm"), "write", name, "--create", "--slots", "256", "--slot-size", "128",
                          "--type-hash", "0x99", "--dims", "1,2,3,4"],
                         input=data, capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr
    got = []
    with plh.ShmReader(name) as r:
        for s in r:
            assert s.type_hash == 0x99 and s.dims == (1, 2, 3, 4)
            got += s.messages()  # plh-shm write packs lines that were waiting
    assert got == [b"line %d" % i for i in range(100)]
