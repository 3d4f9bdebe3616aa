"""plh from Python: shared-memory rings (zero-copy numpy), pub/sub, request/reply, broker queries.

A thin ctypes layer over the stable C API of libplh.so (plh/plh.h): no compiled
extension, so the package works with any Debian python3 and stays in step with the C API
that every other language uses. ctypes releases the GIL during each C call, so a blocking
read lets other Python threads run; long waits are cut into short C calls so Ctrl-C
(KeyboardInterrupt) is seen promptly. See docs/python.md.

Errors are exceptions subclassing plh.Error, carrying the SPEC exit code (.code).
"""
from __future__ import annotations

import ctypes
import json
import os
import time
from contextlib import contextmanager
from itertools import accumulate as _accumulate, repeat as _repeat
from math import prod as _prod
from typing import Any, Iterator, Optional, Sequence, Union

try:
    import numpy as _np
except ImportError:  # numpy is optional: bytes work without it
    _np = None

__all__ = [
    "Error", "UsageError", "Timeout", "NotFound", "BrokerUnreachable", "Refused", "Stopped", "RequestFailed",
    "ShmWriter", "ShmReader", "Slot", "Batch", "Publisher", "Subscriber", "Message", "Requester", "Replier", "broker",
    "remove_segment", "type_hash_of", "dtype_of", "version",
]

# ---- errors ---------------------------------------------------------------------------


class Error(Exception):
    """A plh failure; .code is the SPEC exit code (1 runtime failure)."""

    code = 1

    def __init__(self, message: str, code: Optional[int] = None):
        super().__init__(message)
        if code is not None:
            self.code = code


class UsageError(Error, ValueError):
    code = 2


class Timeout(Error, TimeoutError):
    code = 3


class NotFound(Error):
    code = 4


class BrokerUnreachable(Error):
    code = 5


class Refused(Error):
    code = 6


class Stopped(Error):
    code = 130


class RequestFailed(Error):
    """The server answered a request with an error: .status is the reply status (1..255 an
    exit status or a Replier handler's failure, 256+N a signal, 1000+ see plh-req(1))."""

    def __init__(self, message: str, status: int):
        super().__init__(message, 1)
        self.status = status


_BY_CODE = {2: UsageError, 3: Timeout, 4: NotFound, 5: BrokerUnreachable, 6: Refused, 130: Stopped}

# ---- the library ----------------------------------------------------------------------


def _find_library() -> str:
    env = os.environ.get("PLH_LIBRARY")
    if env:
        return env
    try:
        from . import _config  # written by the build (build tree) or by cmake --install
        if os.path.exists(_config.LIBRARY):
            return _config.LIBRARY
    except ImportError:
        pass
    return "libplh.so.0"


_lib = ctypes.CDLL(_find_library())

_c_int, _c_u32, _c_u64, _c_i64, _c_size = ctypes.c_int, ctypes.c_uint32, ctypes.c_uint64, ctypes.c_int64, ctypes.c_size_t
_vp, _cp = ctypes.c_void_p, ctypes.c_char_p


class _CSlot(ctypes.Structure):
    _fields_ = [("data", _vp), ("size", _c_u64), ("seq", _c_u64), ("ts_ns", _c_i64), ("type_hash", _c_u64),
                ("dims", _c_u64 * 4), ("flags", _c_u32), ("ended", _c_int)]


class _CRequest(ctypes.Structure):
    _fields_ = [("data", _vp), ("size", _c_u64), ("token", _c_u64), ("id", _c_u64), ("flags", _c_u32)]


_P = ctypes.POINTER


def _fn(name: str, *args):
    f = getattr(_lib, name)
    f.argtypes = list(args)
    f.restype = _c_int
    return f


_lib.plh_last_error.restype = _cp
_lib.plh_last_error.argtypes = []
_lib.plh_version.restype = _cp
_lib.plh_version.argtypes = []
_lib.plh_free.restype = None
_lib.plh_free.argtypes = [_vp]
_w_open = _fn("plh_shm_writer_open", _P(_vp), _cp, _c_int, _c_u32, _c_u32, _cp, _cp)
_w_begin = _fn("plh_shm_writer_begin", _vp, _c_i64, _P(_vp), _P(_c_size))
_w_end = _fn("plh_shm_writer_end", _vp, _c_size, _c_i64, _c_u64, _P(_c_u64), _P(_c_u64))
_w_publish = _fn("plh_shm_writer_publish", _vp, _vp, _c_size, _c_i64, _c_u64, _P(_c_u64), _c_i64, _P(_c_u64))
_w_geometry = _fn("plh_shm_writer_geometry", _vp, _P(_c_u32), _P(_c_u32))
_w_end_stream = _fn("plh_shm_writer_end_stream", _vp)
_w_close = _fn("plh_shm_writer_close", _vp)
_shm_remove = _fn("plh_shm_remove", _cp)
_r_open = _fn("plh_shm_reader_open", _P(_vp), _cp, _cp)
_r_acquire = _fn("plh_shm_reader_acquire", _vp, _c_i64, _P(_CSlot))
_r_release = _fn("plh_shm_reader_release", _vp, _P(_c_int))
_r_read_many = _fn("plh_shm_reader_read_many", _vp, _c_i64, _vp, _c_size, _P(_CSlot), _c_size, _P(_c_size), _P(_c_int))
_r_geometry = _fn("plh_shm_reader_geometry", _vp, _P(_c_u32), _P(_c_u32))
_r_skipped = _fn("plh_shm_reader_skipped", _vp, _P(_c_u64))
_r_close = _fn("plh_shm_reader_close", _vp)
_p_open = _fn("plh_publisher_open", _P(_vp), _cp, _cp, _cp, _cp)
_p_endpoint = _fn("plh_publisher_endpoint", _vp, _P(_cp))
_p_wait = _fn("plh_publisher_wait_subscribers", _vp, _c_int, _c_i64)
_p_send = _fn("plh_publisher_send", _vp, _vp, _c_size, _c_i64, _P(_c_u64))
_p_close = _fn("plh_publisher_close", _vp)
_s_open = _fn("plh_subscriber_open", _P(_vp), _cp, _cp, _c_int, _cp, _c_i64)
_s_recv_many = _fn("plh_subscriber_recv_many", _vp, _c_i64, _vp, _c_size, _P(_c_u64), _P(_c_u64), _P(_c_i64), _c_size,
                   _P(_c_size), _P(_c_int))
_s_gaps = _fn("plh_subscriber_gaps", _vp, _P(_c_u64))
_s_close = _fn("plh_subscriber_close", _vp)
_rq_open = _fn("plh_requester_open", _P(_vp), _cp, _cp, _c_int)
_rq_send = _fn("plh_requester_send", _vp, _vp, _c_size)
_rq_recv = _fn("plh_requester_recv", _vp, _c_i64, _P(_vp), _P(_c_size), _P(_c_u32))
_rq_close = _fn("plh_requester_close", _vp)
_rp_open = _fn("plh_replier_open", _P(_vp), _cp, _cp, _cp, _c_int)
_rp_endpoint = _fn("plh_replier_endpoint", _vp, _P(_cp))
_rp_recv = _fn("plh_replier_recv", _vp, _c_i64, _P(_CRequest))
_rp_send = _fn("plh_replier_send", _vp, _c_u64, _vp, _c_size)
_rp_send_error = _fn("plh_replier_send_error", _vp, _c_u64, _c_u32, _cp)
_rp_close = _fn("plh_replier_close", _vp)
_b_ping = _fn("plh_broker_ping", _cp, _P(_vp))
_b_list = _fn("plh_broker_list", _cp, _P(_vp))
_b_info = _fn("plh_broker_info", _cp, _cp, _P(_vp))


# A read-only memoryview of foreign memory without building a ctypes array type per call.
_view_from_memory = ctypes.pythonapi.PyMemoryView_FromMemory
_view_from_memory.restype = ctypes.py_object
_view_from_memory.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t, ctypes.c_int]
_PyBUF_READ, _PyBUF_WRITE = 0x100, 0x200


def _raise(rc: int) -> None:
    msg = (_lib.plh_last_error() or b"").decode("utf-8", "replace") or f"plh error {rc}"
    raise _BY_CODE.get(rc, Error)(msg, rc)


def _check(rc: int) -> None:
    if rc != 0:
        _raise(rc)


def _enc(s: Optional[str]) -> Optional[bytes]:
    return None if s is None else os.fsencode(s)


def version() -> str:
    """The version of libplh.so."""
    return _lib.plh_version().decode()


# Blocking waits are cut into slices this long, so Ctrl-C is noticed between them.
_SLICE_MS = 100


def _wait_loop(call, timeout: Optional[float]) -> int:
    """Runs call(ms) (returns a status) in slices until it is not a timeout or the time is up."""
    if timeout is not None and timeout < 0:
        raise UsageError("timeout must be >= 0 or None")
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        if deadline is None:
            ms = _SLICE_MS
        else:
            ms = max(0, min(_SLICE_MS, int((deadline - time.monotonic()) * 1000 + 0.999)))
        rc = call(ms)
        if rc != 3 or (deadline is not None and time.monotonic() >= deadline):
            return rc


class _Handle:
    """A handle of the C API: close() frees it once (later calls raise UsageError), a context
    manager, and closed when garbage-collected. Subclasses set _close_fn (the C close
    function) and self._label (for messages); _before_close runs before the handle goes."""

    _h = None
    _label = ""
    _close_fn = None

    def _handle(self):
        if self._h is None:
            raise UsageError(f"{type(self).__name__} '{self._label}' is closed")
        return self._h

    def _before_close(self) -> None:
        pass

    def close(self) -> None:
        """Frees the handle (idempotent)."""
        if self._h is not None:
            self._before_close()
            h, self._h = self._h, None
            _check(type(self)._close_fn(h))

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def _as_bytes(data: Any) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode()
    try:
        return bytes(memoryview(data).cast("B"))
    except TypeError as e:
        raise UsageError(f"cannot send {type(data).__name__}: {e}") from None


# ---- dtype/shape <-> type_hash/dims ---------------------------------------------------
# type_hash of a numpy array: 0x504E ("PN") in bits 48..63, ndim in bits 24..31, the dtype
# kind character (b i u f c) in bits 16..23 and the item size in bytes in bits 0..15; the
# data is little endian and C-contiguous. dims = the shape (up to 4 axes; the rest 0).
_TAG = 0x504E << 48
_KINDS = "biufc"


def type_hash_of(dtype: Any, ndim: int) -> int:
    """The type_hash that records a numpy dtype and a number of axes (see docs/python.md)."""
    dt = _np.dtype(dtype)
    if dt.kind not in _KINDS or dt.fields is not None or dt.subdtype is not None:
        raise UsageError(f"dtype {dt} cannot be recorded (bool, int, uint, float and complex only)")
    if not 0 <= ndim <= 4:
        raise UsageError(f"arrays of {ndim} axes cannot be recorded (at most 4)")
    return _TAG | (ndim << 24) | (ord(dt.kind) << 16) | dt.itemsize


def dtype_of(type_hash: int, dims: Sequence[int]):
    """(dtype, shape) recorded by type_hash_of, or None when type_hash is not such a value."""
    if _np is None or (type_hash >> 48) != 0x504E or (type_hash >> 32) & 0xFFFF:
        return None
    ndim = (type_hash >> 24) & 0xFF
    kind = chr((type_hash >> 16) & 0xFF)
    size = type_hash & 0xFFFF
    if ndim > 4 or kind not in _KINDS:
        return None
    try:
        dt = _np.dtype(f"<{kind}{size}") if kind != "b" else _np.dtype(_np.bool_)
    except TypeError:
        return None
    if dt.itemsize != size:
        return None
    return dt, tuple(int(d) for d in dims[:ndim])


def _as_array(data: Any):
    if _np is not None and isinstance(data, _np.ndarray):
        arr = data
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        return _np.ascontiguousarray(arr)
    return None


# ---- shared memory ---------------------------------------------------------------------


class ShmWriter(_Handle):
    """The writer of shared-memory segment NAME (one live writer per segment).

    create=True creates the segment when missing with this geometry (an existing one must
    have it, else Refused); create=False attaches an existing segment (NotFound).
    policy: "latest" | "sequential" | "sync"; checksum: "none" | "xxh3" | "blake2b".
    """

    _close_fn = staticmethod(_w_close)

    def __init__(self, name: str, create: bool = True, slots: int = 64, slot_size: int = 65536,
                 policy: str = "sequential", checksum: str = "none"):
        if not isinstance(slots, int) or not isinstance(slot_size, int) or not 1 <= slots < 2**32 or not 1 <= slot_size < 2**32:
            raise UsageError("slots and slot_size must be integers >= 1")
        h = _vp()
        _check(_w_open(ctypes.byref(h), _enc(name), 1 if create else 0, slots, slot_size, _enc(policy), _enc(checksum)))
        self._h = h
        self.name = self._label = name
        s, z = _c_u32(), _c_u32()
        _check(_w_geometry(h, ctypes.byref(s), ctypes.byref(z)))
        self.slots, self.slot_size = s.value, z.value
        self._in_slot = False

    def write(self, data: Any, ts_ns: Optional[int] = None, type_hash: Optional[int] = None,
              dims: Optional[Sequence[int]] = None, timeout: Optional[float] = None) -> int:
        """Publishes bytes (or any buffer) or a numpy array; returns the slot's seq.

        A numpy array records its dtype/shape in type_hash/dims (unless given)."""
        h = self._handle()
        arr = _as_array(data)
        keep = None  # keeps the buffer alive during the call
        if arr is not None:
            if type_hash is None:
                type_hash = type_hash_of(arr.dtype, arr.ndim)
            if dims is None:
                dims = arr.shape
            size, ptr, keep = arr.nbytes, (arr.ctypes.data if arr.nbytes else None), arr
        elif isinstance(data, bytes):
            size, ptr, keep = len(data), ctypes.cast(ctypes.c_char_p(data), _vp), data
        else:
            try:
                mv = memoryview(data).cast("B")
            except TypeError as e:
                raise UsageError(f"cannot write {type(data).__name__}: {e}") from None
            if mv.readonly or not mv.contiguous:
                keep = bytes(mv)
                size, ptr = len(keep), ctypes.cast(ctypes.c_char_p(keep), _vp)
            else:
                keep = (ctypes.c_char * max(len(mv), 1)).from_buffer(mv) if len(mv) else None
                size, ptr = len(mv), (ctypes.addressof(keep) if keep is not None else None)
        d = _dims(dims)
        if size > self.slot_size:
            raise UsageError(f"{size} bytes do not fit slot_size {self.slot_size}")
        seq = _c_u64()
        rc = _wait_loop(lambda ms: _w_publish(h, ptr, size, ts_ns or 0, type_hash or 0, d, ms, ctypes.byref(seq)),
                        timeout)
        del keep
        _check(rc)
        return seq.value

    @contextmanager
    def slot(self, dtype: Any = None, shape: Union[int, Sequence[int], None] = None, ts_ns: Optional[int] = None,
             type_hash: Optional[int] = None, dims: Optional[Sequence[int]] = None, timeout: Optional[float] = None):
        """Zero copy: yields a writable view of the next slot, committed when the block ends.

        With dtype and shape: a numpy array of that dtype/shape in the slot (Usage error when
        it does not fit); its size, type_hash and dims are recorded. Without: a writable
        memoryview of slot_size bytes; set the size with `view.size = n`... see docs: the
        yielded object for bytes is a _RawSlot with .buf and .size (default: all)."""
        h = self._handle()
        if self._in_slot:
            raise UsageError("a slot is already open on this writer")
        nbytes = None
        if dtype is not None or shape is not None:
            if _np is None:
                raise UsageError("numpy is needed for typed slots")
            dt = _np.dtype(dtype if dtype is not None else "u1").newbyteorder("<")
            shp = (shape,) if isinstance(shape, int) else tuple(shape or ())
            if any((not isinstance(x, int)) or x < 0 for x in shp):
                raise UsageError(f"bad shape {shape!r}")
            nbytes = dt.itemsize * _prod(shp) if shp else dt.itemsize
            if nbytes > self.slot_size:
                raise UsageError(f"an array {shp} of {dt} ({nbytes} bytes) does not fit slot_size {self.slot_size}")
            if type_hash is None:
                type_hash = type_hash_of(dt, len(shp))
            if dims is None:
                dims = shp
        ptr, cap = _vp(), _c_size()
        _check(_wait_loop(lambda ms: _w_begin(h, ms, ctypes.byref(ptr), ctypes.byref(cap)), timeout))
        raw = (ctypes.c_char * cap.value).from_address(ptr.value)
        self._in_slot = True
        try:
            if nbytes is not None:
                view = _np.frombuffer(raw, dtype=dt, count=nbytes // dt.itemsize).reshape(shp)
                holder = _RawSlot(memoryview(raw).cast("B"), nbytes)
                yield view
            else:
                holder = _RawSlot(memoryview(raw).cast("B"), cap.value)
                yield holder
            size = holder.size
            if not isinstance(size, int) or not 0 <= size <= cap.value:
                raise UsageError(f"slot size {size!r} out of range 0..{cap.value}")
        except BaseException:
            # not committed: commit an empty slot is wrong; the C API keeps the slot begun,
            # and the next begin reuses it.
            self._in_slot = False
            raise
        self._in_slot = False
        _check(_w_end(h, size, ts_ns or 0, type_hash or 0, _dims(dims), None))

    def end_stream(self) -> None:
        """Marks end of stream: readers drain what is left, then their iteration ends."""
        _check(_w_end_stream(self._handle()))

    def close(self) -> None:
        """Marks end of stream and lets the segment go (it is not removed)."""
        super().close()


class _RawSlot:
    """The bytes of an open slot: .buf (writable memoryview, slot_size bytes) and .size, the
    number of bytes to commit (default: all)."""

    def __init__(self, buf: memoryview, size: int):
        self.buf = buf
        self.size = size


def _dims(dims: Optional[Sequence[int]]):
    d = (_c_u64 * 4)()
    if dims is not None:
        dims = list(dims)
        if len(dims) > 4:
            raise UsageError(f"at most 4 dims, got {len(dims)}")
        for i, v in enumerate(dims):
            if not isinstance(v, (int,)) and not (_np is not None and isinstance(v, _np.integer)):
                raise UsageError(f"dims must be integers, got {v!r}")
            if not 0 <= int(v) < 2**64:
                raise UsageError(f"dim {v} out of range")
            d[i] = int(v)
    return d


def remove_segment(name: str) -> None:
    """Unlinks segment NAME (NotFound when it does not exist)."""
    _check(_shm_remove(_enc(name)))


class Slot:
    """One slot read from a segment: zero-copy views valid until release() (or the next read,
    or the end of a with block). .flags bit 0: packed (several messages, see messages())."""

    __slots__ = ("seq", "ts_ns", "size", "type_hash", "dims", "flags", "_addr", "_reader", "_gen")

    def __init__(self, c: _CSlot, reader: "ShmReader"):
        self.seq, self.ts_ns, self.size, self.type_hash = c.seq, c.ts_ns, c.size, c.type_hash
        self.dims = tuple(c.dims[:])
        self.flags = c.flags
        self._addr = c.data or 0
        self._reader = reader
        self._gen = reader._gen

    def _valid(self) -> None:
        if self._reader is None or self._reader._gen != self._gen or self._reader._h is None:
            raise UsageError("the slot was released (copy what you need before release or the next read)")

    @property
    def data(self) -> memoryview:
        """The payload, read-only, zero copy (a view into the shared segment)."""
        self._valid()
        if self.size == 0:
            return memoryview(b"")
        return _view_from_memory(self._addr, self.size, _PyBUF_READ)

    def array(self, dtype: Any = None, shape: Optional[Sequence[int]] = None):
        """A read-only numpy view (zero copy) with the dtype/shape from type_hash/dims, or the
        given ones (dtype alone: a flat array). UsageError when they do not fit the payload."""
        self._valid()
        if _np is None:
            raise UsageError("numpy is not installed")
        if dtype is None:
            got = dtype_of(self.type_hash, self.dims)
            if got is None:
                dt, shp = _np.dtype("u1"), (self.size,)
            else:
                dt, shp = got
        else:
            dt = _np.dtype(dtype)
            shp = tuple(shape) if shape is not None else None
        if shp is None:
            if self.size % dt.itemsize:
                raise UsageError(f"{self.size} bytes are not a whole number of {dt} items")
            shp = (self.size // dt.itemsize,)
        need = dt.itemsize * _prod(shp) if shp else dt.itemsize
        if need != self.size:
            raise UsageError(f"an array {tuple(shp)} of {dt} needs {need} bytes; the slot holds {self.size}")
        if self.size == 0:
            a = _np.zeros(shp, dt)
        else:
            a = _np.frombuffer(self.data, dtype=dt).reshape(shp)
        a.flags.writeable = False
        return a

    def messages(self) -> list:
        """The messages in the slot: one (bytes), or for a packed slot (plh-shm write packs
        messages that were waiting) each record; copies. Error on a corrupt packed slot."""
        raw = bytes(self.data)
        if not self.flags & 1:
            return [raw]
        if len(raw) < 4:
            raise Error("corrupt packed slot: shorter than its count")
        count = int.from_bytes(raw[:4], "little")
        out, pos = [], 4
        for _ in range(count):
            if pos + 4 > len(raw):
                raise Error("corrupt packed slot: record header past the payload")
            n = int.from_bytes(raw[pos:pos + 4], "little")
            pos += 4
            if pos + n > len(raw):
                raise Error("corrupt packed slot: record past the payload")
            out.append(raw[pos:pos + n])
            pos += n
        return out

    def release(self) -> bool:
        """Done with the slot; False when (policy latest) it was overwritten while held."""
        return self._reader._release_slot(self)

    def __enter__(self) -> "Slot":
        return self

    def __exit__(self, *exc) -> None:
        if self._reader is not None and self._reader._gen == self._gen:
            self.release()

    def __repr__(self) -> str:
        return f"Slot(seq={self.seq}, ts_ns={self.ts_ns}, size={self.size}, type_hash={self.type_hash:#x}, dims={self.dims})"


_SLOT_DTYPE = None
_bytearray_addr = ctypes.pythonapi.PyByteArray_AsString
_bytearray_addr.restype = ctypes.c_void_p
_bytearray_addr.argtypes = [ctypes.py_object]


def _addr_of_bytearray(b: bytearray) -> int:
    return _bytearray_addr(b)


def _slot_dtype():
    """numpy's view of _CSlot (numpy cannot read the padded ctypes format itself)."""
    global _SLOT_DTYPE
    if _SLOT_DTYPE is None:
        names = [f[0] for f in _CSlot._fields_]
        formats = ["<u8", "<u8", "<u8", "<i8", "<u8", ("<u8", (4,)), "<u4", "<i4"]
        offsets = [getattr(_CSlot, nm).offset for nm in names]
        _SLOT_DTYPE = _np.dtype({"names": names, "formats": formats, "offsets": offsets,
                                 "itemsize": ctypes.sizeof(_CSlot)})
    return _SLOT_DTYPE


class Batch:
    """Slots copied by ShmReader.read_many: .seq .ts_ns .size .type_hash .offset (numpy arrays,
    or lists without numpy) into .buffer; len(), indexing (bytes), iteration."""

    def __init__(self, buffer: bytearray, base: int, cslots, n: int):
        self.buffer = memoryview(buffer)
        if _np is not None and n:
            arr = _np.frombuffer(cslots, dtype=_slot_dtype(), count=n)
            self.seq = arr["seq"].copy()
            self.ts_ns = arr["ts_ns"].copy()
            self.size = arr["size"].copy()
            self.type_hash = arr["type_hash"].copy()
            self.dims = arr["dims"].copy()
            self.offset = (arr["data"].astype(_np.uint64) - _np.uint64(base)).astype(_np.int64)
        else:
            self.seq = [cslots[i].seq for i in range(n)]
            self.ts_ns = [cslots[i].ts_ns for i in range(n)]
            self.size = [cslots[i].size for i in range(n)]
            self.type_hash = [cslots[i].type_hash for i in range(n)]
            self.dims = [tuple(cslots[i].dims) for i in range(n)]
            self.offset = [(cslots[i].data or base) - base for i in range(n)]
        self._n = n

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> bytes:
        if not -self._n <= i < self._n:
            raise IndexError(i)
        i %= self._n
        o, s = int(self.offset[i]), int(self.size[i])
        return bytes(self.buffer[o:o + s])

    def __iter__(self) -> Iterator[bytes]:
        for i in range(self._n):
            yield self[i]


class ShmReader(_Handle):
    """A reader of segment NAME from the oldest slot still held or the latest one.

    read(timeout) → Slot (None at end of stream; Timeout when nothing came in time);
    iterating yields slots until end of stream, each released when the next is read."""

    _close_fn = staticmethod(_r_close)

    def __init__(self, name: str, start: str = "oldest"):
        if start not in ("oldest", "latest"):
            raise UsageError(f"start must be 'oldest' or 'latest', not {start!r}")
        h = _vp()
        _check(_r_open(ctypes.byref(h), _enc(name), _enc(start)))
        self._h = h
        self.name = self._label = name
        s, z = _c_u32(), _c_u32()
        _check(_r_geometry(h, ctypes.byref(s), ctypes.byref(z)))
        self.slots, self.slot_size = s.value, z.value
        self._gen = 0
        self._cslot = _CSlot()
        self._cslot_ref = ctypes.byref(self._cslot)
        self._intact = _c_int(1)
        self._intact_ref = ctypes.byref(self._intact)
        self._ended = False
        self._many = None

    def read(self, timeout: Optional[float] = None) -> Optional[Slot]:
        """The next slot (a held slot is released first); None at end of stream."""
        h = self._handle()
        self._gen += 1
        c = self._cslot
        # Fast path: one C call when a slot is already there (or the wait fits a slice).
        first = _SLICE_MS if timeout is None else max(0, min(_SLICE_MS, int(timeout * 1000)))
        rc = _r_acquire(h, first, self._cslot_ref)
        if rc == 3 and (timeout is None or timeout * 1000 > first):
            rc = _wait_loop(lambda ms: _r_acquire(h, ms, self._cslot_ref),
                            None if timeout is None else timeout - first / 1000)
        if rc:
            _raise(rc)
        if c.ended:
            self._ended = True
            return None
        return Slot(c, self)

    def read_many(self, n: int, timeout: Optional[float] = None) -> Batch:
        """Up to n slots, copied into one buffer (throughput): waits for the first, then takes
        what is already there. An empty Batch at end of stream."""
        h = self._handle()
        if not isinstance(n, int) or n < 1:
            raise UsageError("n must be an integer >= 1")
        self._gen += 1
        if self._many is None or self._many[0] < n:
            self._many = (n, (_CSlot * n)())
        cslots = self._many[1]
        size = n * self.slot_size
        buf = bytearray(size)
        base = _addr_of_bytearray(buf)
        got, ended = _c_size(), _c_int()
        _check(_wait_loop(lambda ms: _r_read_many(h, ms, base, size, cslots, n, ctypes.byref(got),
                                                  ctypes.byref(ended)), timeout))
        if ended.value:
            self._ended = True
        return Batch(buf, base, cslots, got.value)

    def _release_slot(self, slot: Slot) -> bool:
        h = self._handle()
        if slot._gen != self._gen:
            raise UsageError("the slot was already released")
        self._gen += 1
        rc = _r_release(h, self._intact_ref)
        if rc:
            _raise(rc)
        return bool(self._intact.value)

    def release(self) -> bool:
        """Releases the slot read last (if any)."""
        h = self._handle()
        self._gen += 1
        intact = _c_int(1)
        _check(_r_release(h, ctypes.byref(intact)))
        return bool(intact.value)

    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def skipped(self) -> int:
        v = _c_u64()
        _check(_r_skipped(self._handle(), ctypes.byref(v)))
        return v.value

    def __iter__(self) -> Iterator[Slot]:
        while True:
            s = self.read()
            if s is None:
                return
            yield s

    def _before_close(self) -> None:
        self._gen += 1  # slots still out become invalid


# ---- publish / subscribe ---------------------------------------------------------------


class Publisher(_Handle):
    """Publishes messages on CHANNEL (registered in the broker).

    pattern: "pubsub" (every subscriber gets every message; send never blocks) or
    "pipeline" (each message goes to one worker with room; send waits while the workers
    have none, at most timeout; one message is held while there is no worker at all). broker: endpoint, else $PLH_BROKER, else tcp://127.0.0.1:5555; with
    $PLH_BROKER_KEY the data plane is CURVE too. close() sends end of stream (subscribers'
    iteration ends) and deregisters."""

    _close_fn = staticmethod(_p_close)

    def __init__(self, channel: str, pattern: str = "pubsub", schema: Optional[str] = None,
                 broker: Optional[str] = None):
        if pattern not in ("pubsub", "pipeline"):
            raise UsageError(f"pattern must be 'pubsub' or 'pipeline', not {pattern!r}")
        h = _vp()
        _check(_p_open(ctypes.byref(h), _enc(channel), _enc(pattern), _enc(broker), _enc(schema)))
        self._h = h
        self.channel = self._label = channel
        self.pattern = pattern
        ep = _cp()
        _check(_p_endpoint(h, ctypes.byref(ep)))
        self.endpoint = ep.value.decode()
        self._seq = _c_u64()
        self._seq_ref = ctypes.byref(self._seq)

    def send(self, data: Union[bytes, bytearray, memoryview, str], timeout: Optional[float] = None) -> int:
        """Sends one message; returns its seq. pipeline: waits (None: forever) for a worker
        with room (Timeout: not sent)."""
        h = self._handle()
        data = _as_bytes(data)
        if self.pattern == "pubsub":
            _check(_p_send(h, data, len(data), 0, self._seq_ref))
        else:
            _check(_wait_loop(lambda ms: _p_send(h, data, len(data), ms, self._seq_ref), timeout))
        return self._seq.value

    def wait_subscribers(self, n: int = 1, timeout: Optional[float] = None) -> None:
        """Blocks until at least n subscribers are connected (Timeout)."""
        h = self._handle()
        _check(_wait_loop(lambda ms: _p_wait(h, n, ms), timeout))

    def close(self) -> None:
        """Sends end of stream (subscribers' iteration ends; pipeline: once the workers
        confirmed everything, bounded by 5 s) and deregisters."""
        super().close()


class Message:
    """A received message: .seq .ts_ns .data (bytes) .gaps (missed so far)."""

    __slots__ = ("seq", "ts_ns", "data", "gaps")

    def __init__(self, seq: int, ts_ns: int, data: bytes, gaps: int):
        self.seq, self.ts_ns, self.data, self.gaps = seq, ts_ns, data, gaps

    def __repr__(self) -> str:
        return f"Message(seq={self.seq}, ts_ns={self.ts_ns}, data={self.data[:32]!r}{'...' if len(self.data) > 32 else ''})"


class Subscriber(_Handle):
    """Subscribes to CHANNEL through the broker; iterable of Message until end of stream.

    wait=True waits (up to wait_timeout seconds, None = forever) for the channel to appear;
    else NotFound at once. Messages that have arrived are taken from the library in batches
    (one C call per batch). A pipeline channel makes this subscriber one of its workers:
    what it received is confirmed when it asks for more after its batch (what it had not
    confirmed when it closes goes to another worker)."""

    _close_fn = staticmethod(_s_close)

    def __init__(self, channel: str, wait: bool = False, schema: Optional[str] = None,
                 broker: Optional[str] = None, wait_timeout: Optional[float] = None):
        h = _vp()
        _check(_wait_loop(lambda ms: _s_open(ctypes.byref(h), _enc(channel), _enc(broker), 1 if wait else 0,
                                             _enc(schema), ms if wait else 0), wait_timeout if wait else 0))
        self._h = h
        self.channel = self._label = channel
        self._buf = ctypes.create_string_buffer(1 << 20)
        self._cap = 0
        self._sizes = self._seqs = self._tss = None
        self._data, self._i = [], 0  # Messages received, not yet handed out
        self.gaps = 0
        self.ended = False

    _BATCH = 4096  # messages taken from the library per call (those already arrived)

    def _fill(self, n: int, timeout: Optional[float], meta: bool = True) -> int:
        """Receives up to n messages (waiting up to timeout for the first) as the pending ones;
        returns how many (0 at end of stream)."""
        h = self._handle()
        if self._cap < n:
            self._sizes, self._seqs, self._tss = (_c_u64 * n)(), (_c_u64 * n)(), (_c_i64 * n)()
            self._cap = n
        sizes = self._sizes
        seqs, tss = (self._seqs, self._tss) if meta else (None, None)
        got, ended = _c_size(), _c_int()
        while True:
            buf = self._buf
            rc = _wait_loop(lambda ms: _s_recv_many(h, ms, buf, len(buf), sizes, seqs, tss, n, ctypes.byref(got),
                                                    ctypes.byref(ended)), timeout)
            if rc == 2 and got.value == 0 and sizes[0] > len(buf):
                self._buf = ctypes.create_string_buffer(max(sizes[0], 2 * len(buf)))  # a larger message
                continue
            _check(rc)
            break
        g = _c_u64()
        _check(_s_gaps(h, ctypes.byref(g)))
        self.gaps = g.value
        k = got.value
        self._i = 0
        if k == 0:
            self.ended = bool(ended.value)
            self._data = []
            return 0
        # (the fastest way found: C-level list building, one slice object per message)
        ends = list(_accumulate(memoryview(sizes).cast("B").cast("Q")[:k]))
        starts = [0]
        starts += ends[:-1]
        raw = ctypes.string_at(buf, ends[-1])
        self._data = list(map(raw.__getitem__, map(slice, starts, ends)))
        if meta:
            self._data = list(map(Message, memoryview(seqs).cast("B").cast("Q")[:k].tolist(),
                                  memoryview(tss).cast("B").cast("q")[:k].tolist(), self._data, _repeat(self.gaps)))
        return k

    def recv(self, timeout: Optional[float] = None) -> Optional[Message]:
        """The next message; None at end of stream; Timeout when none came in time."""
        i = self._i
        if i >= len(self._data):
            if not self._fill(self._BATCH, timeout):
                return None
            i = 0
        self._i = i + 1
        return self._data[i]

    def __iter__(self) -> Iterator[Message]:
        while True:
            i = self._i
            if i >= len(self._data):
                if not self._fill(self._BATCH, None):
                    return
                i = 0
            self._i = i + 1
            yield self._data[i]

    def recv_many(self, n: int = 65536, timeout: Optional[float] = None) -> list:
        """Throughput: the payloads (bytes) of up to n messages, waiting for the first, then
        taking what has already arrived; [] at end of stream; Timeout when nothing came."""
        if not isinstance(n, int) or n < 1:
            raise UsageError("n must be an integer >= 1")
        if self._i < len(self._data):  # received already (by recv or iteration)
            out = [m.data for m in self._data[self._i:self._i + n]]
            self._i += len(out)
            return out
        self._fill(n, timeout, meta=False)
        out, self._data = self._data, []
        return out


# ---- request / reply -------------------------------------------------------------------


class Requester(_Handle):
    """Sends requests to SERVICE: the servers the broker lists for it (plh-rep, plh.Replier,
    any C host), least recently used first; or one server at an endpoint ("tcp://...") with
    no broker. wait=True: a request waits (within its timeout) for a server to appear; else
    NotFound at once when there is none.

    >>> plh.Requester("dmm").request(b"VOLT?", timeout=2)
    b'3.2'
    """

    _close_fn = staticmethod(_rq_close)

    def __init__(self, service: str, broker: Optional[str] = None, wait: bool = False):
        h = _vp()
        _check(_rq_open(ctypes.byref(h), _enc(service), _enc(broker), 1 if wait else 0))
        self._h = h
        self.service = self._label = service
        self._reply, self._size, self._status = _vp(), _c_size(), _c_u32()
        self._refs = (ctypes.byref(self._reply), ctypes.byref(self._size), ctypes.byref(self._status))

    def request(self, data: Union[bytes, bytearray, memoryview, str], timeout: Optional[float] = None) -> bytes:
        """Sends one request and returns the reply (None: wait forever). Timeout when no reply
        came in time (a late reply is dropped); RequestFailed for an error reply; Error when
        the server went away with it."""
        h = self._handle()
        data = _as_bytes(data)
        _check(_rq_send(h, data, len(data)))
        r, z, st = self._refs
        rc = _wait_loop(lambda ms: _rq_recv(h, ms, r, z, st), timeout)
        if rc:
            if rc == 1 and self._status.value:
                raise RequestFailed((_lib.plh_last_error() or b"").decode("utf-8", "replace"), self._status.value)
            _raise(rc)
        return ctypes.string_at(self._reply.value, self._size.value) if self._size.value else b""


class Replier(_Handle):
    """Serves SERVICE: handler(request: bytes) -> bytes (or str, or None for an empty reply)
    answers each request. An exception in the handler becomes an error reply (status 1, or a
    plh.Error's code; the message "TypeName: text") and serving goes on.

    Registered with the broker as plh-rep registers (so plh-req, plh.Requester and C hosts
    find it); service=None: no broker, requesters connect to .endpoint. concurrency: the
    requests the server advertises it takes at a time (it still handles one after another).
    serve() loops until stop() (from another thread), count requests, or Ctrl-C."""

    _close_fn = staticmethod(_rp_close)

    def __init__(self, service: Optional[str], handler, broker: Optional[str] = None, bind: Optional[str] = None,
                 concurrency: int = 1):
        if not callable(handler):
            raise UsageError("handler must be callable: handler(bytes) -> bytes")
        h = _vp()
        _check(_rp_open(ctypes.byref(h), _enc(service), _enc(broker), _enc(bind), concurrency))
        self._h = h
        self.service = service
        self._label = service or "direct"
        self.handler = handler
        ep = _cp()
        _check(_rp_endpoint(h, ctypes.byref(ep)))
        self.endpoint = ep.value.decode()
        self._req = _CRequest()
        self._req_ref = ctypes.byref(self._req)
        self._stopping = False
        self.served = 0
        self.errors = 0

    def serve_one(self, timeout: Optional[float] = None) -> bool:
        """Waits for one request (None: forever) and answers it; False when none came in time
        or stop() was called."""
        h = self._handle()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._stopping:
                return False
            ms = _SLICE_MS if deadline is None else max(0, min(_SLICE_MS, int((deadline - time.monotonic()) * 1000 + 0.999)))
            rc = _rp_recv(h, ms, self._req_ref)
            if rc == 0:
                break
            if rc != 3:
                _raise(rc)
            if deadline is not None and time.monotonic() >= deadline:
                return False
        q = self._req
        token = q.token
        body = ctypes.string_at(q.data, q.size) if q.size else b""
        try:
            out = self.handler(body)
            if out is None:
                out = b""
            elif isinstance(out, str):
                out = out.encode()
            elif not isinstance(out, bytes):
                try:
                    out = bytes(memoryview(out).cast("B"))
                except TypeError:
                    raise TypeError(f"the handler returned {type(out).__name__}, not bytes") from None
        except Exception as e:  # the requester gets it; the service goes on
            self.errors += 1
            status = e.code if isinstance(e, Error) and 0 < e.code < 256 else 1
            msg = f"{type(e).__name__}: {e}".splitlines()[0] if str(e) else type(e).__name__
            _check(_rp_send_error(h, token, status, msg.encode("utf-8", "replace")))
            return True
        _check(_rp_send(h, token, out, len(out)))
        self.served += 1
        return True

    def serve(self, count: Optional[int] = None) -> int:
        """Answers requests until stop(), count of them, or KeyboardInterrupt; returns how many."""
        n = 0
        while (count is None or n < count) and not self._stopping:
            if self.serve_one():
                n += 1
        return n

    run = serve

    def stop(self) -> None:
        """Makes serve() return within 0.1 s, for good (safe from another thread or a handler)."""
        self._stopping = True


# ---- broker queries --------------------------------------------------------------------


class _Broker:
    """Queries of one broker (as plh-ctl --json answers them), returning dicts."""

    def __init__(self, endpoint: Optional[str]):
        self.endpoint = endpoint

    def _json(self, call, *args) -> Any:
        p = _vp()
        _check(call(_enc(self.endpoint), *args, ctypes.byref(p)))
        try:
            return json.loads(ctypes.string_at(p.value).decode())
        finally:
            _lib.plh_free(p)

    def ping(self) -> dict:
        return self._json(_b_ping)

    def list(self) -> Any:
        return self._json(_b_list)

    def info(self, channel: str) -> dict:
        return self._json(_b_info, _enc(channel))


def broker(endpoint: Optional[str] = None) -> _Broker:
    """The broker at endpoint (None: $PLH_BROKER, else tcp://127.0.0.1:5555; $PLH_BROKER_KEY
    for CURVE)."""
    return _Broker(endpoint)
