/* plh.h: the stable C API of plh (libplh.so). Plain C11; usable from C, C++, and any
 * language that calls C (Python ctypes, LabVIEW, MATLAB, Igor Pro, Julia).
 *
 * Conventions
 *  - Every function returns an int status: the exit code the SPEC assigns (PLH_OK 0,
 *    PLH_FAILURE 1, PLH_USAGE 2, PLH_TIMEOUT 3, PLH_NOT_FOUND 4, PLH_UNREACHABLE 5,
 *    PLH_REFUSED 6, PLH_STOPPED 130). On anything but PLH_OK, plh_last_error() gives a
 *    one-line message (thread-local; valid until the next plh_* call on this thread).
 *  - Handles are opaque; *_open creates one, *_close frees it (NULL is accepted and is a
 *    no-op). A handle is used by one thread at a time. Every argument is checked: a NULL
 *    handle or output pointer, or a bad size, returns PLH_USAGE and never crashes.
 *  - Timeouts are milliseconds; a negative timeout waits forever.
 *  - No C++ exception crosses this boundary; the library never prints to stdout and
 *    never calls exit().
 *  - Strings returned through char** are allocated by the library: free them with
 *    plh_free().
 * See docs/c-api.md. */
#ifndef PLH_PLH_H
#define PLH_PLH_H

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define PLH_API __attribute__((visibility("default")))
#else
#define PLH_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

enum plh_status {
  PLH_OK = 0,
  PLH_FAILURE = 1,
  PLH_USAGE = 2,
  PLH_TIMEOUT = 3,
  PLH_NOT_FOUND = 4,
  PLH_UNREACHABLE = 5,
  PLH_REFUSED = 6,
  PLH_STOPPED = 130
};

/* The message of the last failed call on this thread ("" when none). */
PLH_API const char* plh_last_error(void);
/* "0.1.0". */
PLH_API const char* plh_version(void);
/* Frees a string the library allocated (NULL: no-op). */
PLH_API void plh_free(void* p);

/* ---- Shared memory (the DataBlock, see man plh-shm) ---------------------------------- */

typedef struct plh_shm_writer plh_shm_writer;
typedef struct plh_shm_reader plh_shm_reader;

/* Opens the writer of segment NAME. create != 0: creates it when missing with this
 * geometry (slots >= 1, slot_size >= 1), policy "latest" | "sequential" | "sync" and
 * checksum "none" | "xxh3" | "blake2b" (NULL: "sequential" / "none"); an existing
 * segment must have that geometry (else PLH_REFUSED). create == 0: attaches an existing
 * segment (PLH_NOT_FOUND when missing); geometry arguments are ignored. */
PLH_API int plh_shm_writer_open(plh_shm_writer** out, const char* name, int create, uint32_t slots,
                                uint32_t slot_size, const char* policy, const char* checksum);
/* Next slot's payload area: *data (writable, *capacity = slot_size bytes) until
 * plh_shm_writer_end. Waits while the ring is full (sequential/sync), at most timeout_ms
 * (PLH_TIMEOUT). */
PLH_API int plh_shm_writer_begin(plh_shm_writer* w, int64_t timeout_ms, void** data, size_t* capacity);
/* Commits the slot begun last: size <= slot_size (else PLH_USAGE, slot not committed);
 * ts_ns 0 = now (CLOCK_REALTIME); dims: 4 values or NULL (zeros). *seq (may be NULL)
 * receives the slot's sequence number. */
PLH_API int plh_shm_writer_end(plh_shm_writer* w, size_t size, int64_t ts_ns, uint64_t type_hash,
                               const uint64_t* dims, uint64_t* seq);
/* begin + copy + end. */
PLH_API int plh_shm_writer_publish(plh_shm_writer* w, const void* data, size_t size, int64_t ts_ns,
                                   uint64_t type_hash, const uint64_t* dims, int64_t timeout_ms, uint64_t* seq);
PLH_API int plh_shm_writer_geometry(const plh_shm_writer* w, uint32_t* slots, uint32_t* slot_size);
/* Marks end of stream: readers drain what is left, then see end of stream. */
PLH_API int plh_shm_writer_end_stream(plh_shm_writer* w);
/* Marks end of stream (unless already marked) and frees the handle. Never unlinks. */
PLH_API int plh_shm_writer_close(plh_shm_writer* w);
/* Unlinks segment NAME (PLH_NOT_FOUND when it did not exist). */
PLH_API int plh_shm_remove(const char* name);

/* One committed slot, valid until plh_shm_reader_release or the next acquire. */
typedef struct plh_slot {
  const void* data;   /* size bytes, read-only; NULL at end of stream */
  uint64_t size;
  uint64_t seq;
  int64_t ts_ns;
  uint64_t type_hash;
  uint64_t dims[4];
  uint32_t flags;
  int ended;          /* 1: end of stream (the writer ended and everything was read) */
} plh_slot;

/* start: "oldest" (the oldest slot still held; NULL means this) or "latest". */
PLH_API int plh_shm_reader_open(plh_shm_reader** out, const char* name, const char* start);
/* Next slot: PLH_OK with *slot filled (slot->ended = 1 and data NULL at end of stream),
 * PLH_TIMEOUT, PLH_FAILURE (writer gone, checksum mismatch: the slot is skipped, ...).
 * A slot still held is released first. */
PLH_API int plh_shm_reader_acquire(plh_shm_reader* r, int64_t timeout_ms, plh_slot* slot);
/* Done with the slot. *intact (may be NULL) = 0 when under policy latest the writer
 * overwrote it while held. */
PLH_API int plh_shm_reader_release(plh_shm_reader* r, int* intact);
/* Up to max slots, copied: waits up to timeout_ms for the first, then takes what is
 * already committed. Payloads are packed into buf (buf_size bytes) in order; slots[i].data
 * points into buf. Stops early when the next payload does not fit buf (at least one
 * must: else PLH_USAGE) or at end of stream (*ended = 1). *got = slots filled; PLH_OK with
 * *got = 0 only at end of stream; PLH_TIMEOUT when nothing came. */
PLH_API int plh_shm_reader_read_many(plh_shm_reader* r, int64_t timeout_ms, void* buf, size_t buf_size,
                                     plh_slot* slots, size_t max, size_t* got, int* ended);
PLH_API int plh_shm_reader_geometry(const plh_shm_reader* r, uint32_t* slots, uint32_t* slot_size);
/* Slots skipped (policy latest: overwritten before they were read). */
PLH_API int plh_shm_reader_skipped(const plh_shm_reader* r, uint64_t* skipped);
PLH_API int plh_shm_reader_close(plh_shm_reader* r);

/* ---- Publish / subscribe over ZeroMQ, through the broker ------------------------------ */

typedef struct plh_publisher plh_publisher;
typedef struct plh_subscriber plh_subscriber;

/* broker: endpoint, NULL = $PLH_BROKER, else tcp://127.0.0.1:5555. Binds
 * tcp://127.0.0.1:0 and registers CHANNEL. pattern: "pubsub" (NULL means this: every
 * subscriber gets every message) or "pipeline" (each message goes to exactly one
 * subscriber, a worker, when it has room; at least once). schema: "ID[@VERSION]" or NULL.
 * With $PLH_BROKER_KEY (a CURVE broker, as for the tools) the data plane is CURVE too: a
 * fresh server keypair, registered with the channel, admitting the client keys the
 * broker admits; subscribers use $PLH_CLIENT_KEY (else an ephemeral key). */
PLH_API int plh_publisher_open(plh_publisher** out, const char* channel, const char* pattern, const char* broker,
                               const char* schema);
/* The data endpoint subscribers connect to (valid while the handle lives). */
PLH_API int plh_publisher_endpoint(const plh_publisher* p, const char** endpoint);
/* Waits until at least n subscribers are connected (PLH_TIMEOUT after timeout_ms). */
PLH_API int plh_publisher_wait_subscribers(plh_publisher* p, int n, int64_t timeout_ms);
/* Sends one message. pubsub: never blocks (a subscriber at its high-water mark misses it
 * and sees a gap; timeout_ms is ignored). pipeline: waits while the workers have no room
 * (what is already queued for them goes first; one message is held inside while there is
 * no worker at all), at most timeout_ms (PLH_TIMEOUT: not sent; send it again). *seq (may
 * be NULL) receives its sequence number (1, 2, ...). */
PLH_API int plh_publisher_send(plh_publisher* p, const void* data, size_t size, int64_t timeout_ms, uint64_t* seq);
/* Sends end of stream (delivered to plh-sub consumers, bounded by 5 s), deregisters,
 * frees the handle. */
PLH_API int plh_publisher_close(plh_publisher* p);

typedef struct plh_message {
  const void* data;   /* valid until the next receive or close */
  uint64_t size;
  uint64_t seq;
  int64_t ts_ns;
  uint64_t gaps;      /* messages missed so far on this subscription (sequence jumps) */
  int ended;          /* 1: end of stream, no data */
} plh_message;

/* Finds CHANNEL through the broker and connects (its pattern, pubsub or pipeline, and its
 * CURVE key come from the broker). wait != 0: waits up to timeout_ms for the channel to
 * appear; else PLH_NOT_FOUND at once when it does not exist. A pipeline subscriber is a
 * worker: what it received is confirmed when a receive finds nothing more waiting (it is
 * idle); what it had not confirmed when it closes (or dies) goes to another worker (at
 * least once). */
PLH_API int plh_subscriber_open(plh_subscriber** out, const char* channel, const char* broker, int wait,
                                const char* schema, int64_t timeout_ms);
/* Next message: PLH_OK (msg->ended = 1 at end of stream), PLH_TIMEOUT. */
PLH_API int plh_subscriber_recv(plh_subscriber* s, int64_t timeout_ms, plh_message* msg);
/* Throughput: up to max messages, copied. Waits up to timeout_ms for the first, then takes
 * what has already arrived. Payloads are packed into buf in order, sizes[i] their sizes;
 * seqs[i] and ts_ns[i] (each may be NULL) their sequence numbers and timestamps. Stops
 * early when the next payload does not fit the rest of buf; when even the first does not
 * fit: PLH_USAGE with sizes[0] = its size (it stays for the next call, with a larger buf).
 * *got = messages; PLH_OK with *got = 0 only at end of stream (*ended = 1). */
PLH_API int plh_subscriber_recv_many(plh_subscriber* s, int64_t timeout_ms, void* buf, size_t buf_size,
                                     uint64_t* sizes, uint64_t* seqs, int64_t* ts_ns, size_t max, size_t* got,
                                     int* ended);
/* Messages missed so far (sequence jumps), as plh_message.gaps. */
PLH_API int plh_subscriber_gaps(const plh_subscriber* s, uint64_t* gaps);
PLH_API int plh_subscriber_close(plh_subscriber* s);

/* ---- Request / reply (the wire of plh-req / plh-rep, see man plh-req) ----------------- */

typedef struct plh_requester plh_requester;
typedef struct plh_replier plh_replier;

/* A requester of SERVICE: the servers the broker lists for it (re-listed every second
 * while requests run; each request goes to the least recently used server that is up), or,
 * when SERVICE is an endpoint ("tcp://...", "ipc://..."), that one server with no broker.
 * wait == 0: PLH_NOT_FOUND at once when the broker lists no server; wait != 0: a request
 * waits (within its timeout) for a server to appear. CURVE as for the subscriber. */
PLH_API int plh_requester_open(plh_requester** out, const char* service, const char* broker, int wait);
/* Sends one request and waits up to timeout_ms for its reply: PLH_OK with *reply /
 * *reply_size (valid until the next request or close; NULL/0 for an empty reply).
 * *status (may be NULL) receives the reply status: 0 ok, else the server's error status
 * (1..255 an exit status, 256+N a signal, 1000+ see plh-req(1)) with PLH_FAILURE and the
 * server's message in plh_last_error(). PLH_TIMEOUT when no reply came in time (the
 * request is abandoned: a late reply is dropped). One request at a time per handle. */
PLH_API int plh_requester_request(plh_requester* r, const void* data, size_t size, int64_t timeout_ms,
                                  const void** reply, size_t* reply_size, uint32_t* status);
/* The same in two steps, for hosts that wait in slices (e.g. to stay interruptible):
 * plh_requester_send issues the request (replacing one still in flight), then
 * plh_requester_recv waits up to timeout_ms; PLH_TIMEOUT keeps the request in flight, so
 * recv may be called again. Results as for plh_requester_request. */
PLH_API int plh_requester_send(plh_requester* r, const void* data, size_t size);
PLH_API int plh_requester_recv(plh_requester* r, int64_t timeout_ms, const void** reply, size_t* reply_size,
                               uint32_t* status);
PLH_API int plh_requester_close(plh_requester* r);

/* One received request: reply to it with plh_replier_send(_error) and its token. */
typedef struct plh_request {
  const void* data;   /* size bytes, valid until the reply to it is sent or close */
  uint64_t size;
  uint64_t token;     /* identifies the request in plh_replier_send / _send_error */
  uint64_t id;        /* the requester's request id (0 from a plain REQ client) */
  uint32_t flags;     /* bit 0: a retry (the requester sent this id before) */
} plh_request;

/* A server of SERVICE: binds a ROUTER (bind: endpoint, NULL = tcp://127.0.0.1:0, or every
 * interface when the broker is remote) and registers it with the broker as plh-rep does
 * (SERVICE.sPID-XXXXXX, pattern reqrep). service NULL: no broker (requesters connect to
 * plh_replier_endpoint directly). concurrency >= 1: the requests it takes at a time
 * (advertised to requesters; more are queued). With $PLH_BROKER_KEY it is a CURVE server.
 * No callbacks: the host loops plh_replier_recv → work → plh_replier_send. */
PLH_API int plh_replier_open(plh_replier** out, const char* service, const char* broker, const char* bind,
                             int concurrency);
PLH_API int plh_replier_endpoint(const plh_replier* r, const char** endpoint);
/* The next request, waiting up to timeout_ms (PLH_TIMEOUT). Malformed requests are
 * answered (status 1002) or dropped, never returned. */
PLH_API int plh_replier_recv(plh_replier* r, int64_t timeout_ms, plh_request* req);
/* Replies (status 0) to the request with this token (PLH_USAGE for an unknown token). */
PLH_API int plh_replier_send(plh_replier* r, uint64_t token, const void* data, size_t size);
/* Replies with an error: status 1..255 (like an exit status; 1 for a general failure) or
 * 1000+ (plh-req(1)); message: one line, cut to 512 bytes (NULL: ""). */
PLH_API int plh_replier_send_error(plh_replier* r, uint64_t token, uint32_t status, const char* message);
/* Answers requests still held with status 1003 (service unavailable), deregisters and
 * frees the handle. */
PLH_API int plh_replier_close(plh_replier* r);

/* ---- Broker queries (the answers of plh-ctl --json, as JSON text) --------------------- */

/* broker: endpoint or NULL (as above). *json: allocated, free with plh_free. */
PLH_API int plh_broker_ping(const char* broker, char** json);
PLH_API int plh_broker_list(const char* broker, char** json);
PLH_API int plh_broker_info(const char* broker, const char* channel, char** json);

#ifdef __cplusplus
}
#endif
#endif /* PLH_PLH_H */
