/* The C API from C11, using only plh/plh.h: each function, good and bad input.
 * Usage: plh-capi-tests shm|bad-input|broker|pubsub|reqrep|pipeline
 * (PLH_BROKER_BIN, PLH_REQ_BIN, PLH_REP_BIN: compile definitions). */
#define _POSIX_C_SOURCE 200809L
#include <plh/plh.h>

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int failures = 0;

#define CHECK(cond)                                                                          \
  do {                                                                                       \
    if (!(cond)) {                                                                           \
      fprintf(stderr, "%s:%d: CHECK failed: %s (last error: %s)\n", __FILE__, __LINE__, #cond, \
              plh_last_error());                                                             \
      ++failures;                                                                            \
    }                                                                                        \
  } while (0)

#define CHECK_RC(call, want)                                                                    \
  do {                                                                                          \
    int rc_ = (call);                                                                           \
    if (rc_ != (want)) {                                                                        \
      fprintf(stderr, "%s:%d: %s returned %d, want %d (last error: %s)\n", __FILE__, __LINE__, \
              #call, rc_, (want), plh_last_error());                                            \
      ++failures;                                                                               \
    } else if ((want) != PLH_OK && plh_last_error()[0] == '\0') {                               \
      fprintf(stderr, "%s:%d: %s failed without a message\n", __FILE__, __LINE__, #call);      \
      ++failures;                                                                               \
    }                                                                                           \
  } while (0)

static void unique_name(char* out, size_t n, const char* what) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  snprintf(out, n, "capi-%s-%ld-%ld", what, (long)getpid(), (long)(ts.tv_nsec % 1000000));
}

static int test_shm(void) {
  char name[64];
  unique_name(name, sizeof name, "shm");
  plh_shm_writer* w = NULL;
  CHECK_RC(plh_shm_writer_open(&w, name, 1, 8, 256, "sequential", "xxh3"), PLH_OK);
  CHECK(w != NULL);
  if (!w) return 1;
  uint32_t slots = 0, slot_size = 0;
  CHECK_RC(plh_shm_writer_geometry(w, &slots, &slot_size), PLH_OK);
  CHECK(slots == 8 && slot_size == 256);

  plh_shm_reader* r = NULL;
  CHECK_RC(plh_shm_reader_open(&r, name, "oldest"), PLH_OK);
  CHECK_RC(plh_shm_reader_geometry(r, &slots, &slot_size), PLH_OK);
  CHECK(slots == 8 && slot_size == 256);

  /* zero copy: begin -> fill in place -> end with metadata */
  void* buf = NULL;
  size_t cap = 0;
  CHECK_RC(plh_shm_writer_begin(w, 1000, &buf, &cap), PLH_OK);
  CHECK(buf != NULL && cap == 256);
  memcpy(buf, "hello", 5);
  const uint64_t dims[4] = {2, 3, 0, 0};
  uint64_t seq = 0;
  CHECK_RC(plh_shm_writer_end(w, 5, 1234567, 0xabcdu, dims, &seq), PLH_OK);
  CHECK(seq == 1);
  /* copying publish */
  CHECK_RC(plh_shm_writer_publish(w, "world!", 6, 0, 7, NULL, 1000, &seq), PLH_OK);
  CHECK(seq == 2);

  plh_slot s;
  CHECK_RC(plh_shm_reader_acquire(r, 1000, &s), PLH_OK);
  CHECK(s.ended == 0 && s.size == 5 && s.seq == 1 && s.ts_ns == 1234567 && s.type_hash == 0xabcdu);
  CHECK(s.dims[0] == 2 && s.dims[1] == 3 && s.dims[2] == 0 && s.dims[3] == 0);
  CHECK(s.data && memcmp(s.data, "hello", 5) == 0);
  int intact = 0;
  CHECK_RC(plh_shm_reader_release(r, &intact), PLH_OK);
  CHECK(intact == 1);
  CHECK_RC(plh_shm_reader_acquire(r, 1000, &s), PLH_OK);
  CHECK(s.size == 6 && s.seq == 2 && s.type_hash == 7 && s.ts_ns > 0 && memcmp(s.data, "world!", 6) == 0);
  CHECK_RC(plh_shm_reader_release(r, NULL), PLH_OK);

  /* nothing more: timeout */
  CHECK_RC(plh_shm_reader_acquire(r, 20, &s), PLH_TIMEOUT);

  /* read_many: five slots in one call, copied into one buffer */
  for (int i = 0; i < 5; ++i) {
    char msg[16];
    int n = snprintf(msg, sizeof msg, "m%d", i);
    CHECK_RC(plh_shm_writer_publish(w, msg, (size_t)n, 0, 0, NULL, 1000, NULL), PLH_OK);
  }
  CHECK_RC(plh_shm_writer_end_stream(w), PLH_OK);
  static unsigned char many[8 * 256];
  plh_slot ss[8];
  size_t got = 0;
  int ended = 0;
  CHECK_RC(plh_shm_reader_read_many(r, 1000, many, sizeof many, ss, 8, &got, &ended), PLH_OK);
  CHECK(got == 5);
  for (size_t i = 0; i < got && i < 5; ++i) {
    char want[16];
    int n = snprintf(want, sizeof want, "m%zu", i);
    CHECK(ss[i].seq == 3 + i && ss[i].size == (uint64_t)n && memcmp(ss[i].data, want, (size_t)n) == 0);
    CHECK((const unsigned char*)ss[i].data >= many && (const unsigned char*)ss[i].data < many + sizeof many);
  }
  /* end of stream after draining */
  CHECK_RC(plh_shm_reader_acquire(r, 1000, &s), PLH_OK);
  CHECK(s.ended == 1 && s.data == NULL);
  CHECK_RC(plh_shm_reader_read_many(r, 1000, many, sizeof many, ss, 8, &got, &ended), PLH_OK);
  CHECK(got == 0 && ended == 1);
  /* begin after the end of stream is refused */
  CHECK_RC(plh_shm_writer_begin(w, 10, &buf, &cap), PLH_USAGE);
  uint64_t skipped = 99;
  CHECK_RC(plh_shm_reader_skipped(r, &skipped), PLH_OK);
  CHECK(skipped == 0);

  CHECK_RC(plh_shm_reader_close(r), PLH_OK);
  CHECK_RC(plh_shm_writer_close(w), PLH_OK);

  /* attach an existing segment without create; wrong geometry with create is refused */
  CHECK_RC(plh_shm_writer_open(&w, name, 0, 0, 0, NULL, NULL), PLH_OK);
  CHECK_RC(plh_shm_writer_close(w), PLH_OK);
  CHECK_RC(plh_shm_writer_open(&w, name, 1, 16, 256, "sequential", "xxh3"), PLH_REFUSED);
  CHECK(w == NULL);
  CHECK_RC(plh_shm_remove(name), PLH_OK);
  CHECK_RC(plh_shm_remove(name), PLH_NOT_FOUND);
  return failures;
}

static int test_bad_input(void) {
  char name[64];
  unique_name(name, sizeof name, "bad");
  plh_shm_writer* w = NULL;
  plh_shm_reader* r = NULL;
  void* buf = NULL;
  size_t cap = 0;
  plh_slot s;
  plh_message m;
  char* json = NULL;
  size_t got = 0;

  CHECK_RC(plh_shm_writer_open(NULL, name, 1, 8, 64, NULL, NULL), PLH_USAGE);
  CHECK_RC(plh_shm_writer_open(&w, NULL, 1, 8, 64, NULL, NULL), PLH_USAGE);
  CHECK_RC(plh_shm_writer_open(&w, name, 1, 0, 64, NULL, NULL), PLH_USAGE);
  CHECK_RC(plh_shm_writer_open(&w, name, 1, 8, 0, NULL, NULL), PLH_USAGE);
  CHECK_RC(plh_shm_writer_open(&w, name, 1, 8, 64, "fastest", NULL), PLH_USAGE);
  CHECK_RC(plh_shm_writer_open(&w, name, 1, 8, 64, NULL, "md5"), PLH_USAGE);
  CHECK_RC(plh_shm_writer_open(&w, "bad/name", 1, 8, 64, NULL, NULL), PLH_USAGE);
  CHECK_RC(plh_shm_writer_open(&w, name, 0, 0, 0, NULL, NULL), PLH_NOT_FOUND);
  CHECK(w == NULL);
  CHECK_RC(plh_shm_reader_open(&r, name, NULL), PLH_NOT_FOUND);
  CHECK(r == NULL);

  CHECK_RC(plh_shm_writer_begin(NULL, 0, &buf, &cap), PLH_USAGE);
  CHECK_RC(plh_shm_writer_end(NULL, 0, 0, 0, NULL, NULL), PLH_USAGE);
  CHECK_RC(plh_shm_writer_publish(NULL, "x", 1, 0, 0, NULL, 0, NULL), PLH_USAGE);
  CHECK_RC(plh_shm_writer_geometry(NULL, NULL, NULL), PLH_USAGE);
  CHECK_RC(plh_shm_writer_end_stream(NULL), PLH_USAGE);
  CHECK_RC(plh_shm_writer_close(NULL), PLH_OK);
  CHECK_RC(plh_shm_remove(NULL), PLH_USAGE);
  CHECK_RC(plh_shm_reader_acquire(NULL, 0, &s), PLH_USAGE);
  CHECK_RC(plh_shm_reader_release(NULL, NULL), PLH_USAGE);
  CHECK_RC(plh_shm_reader_read_many(NULL, 0, buf, 0, &s, 1, &got, NULL), PLH_USAGE);
  CHECK_RC(plh_shm_reader_geometry(NULL, NULL, NULL), PLH_USAGE);
  CHECK_RC(plh_shm_reader_skipped(NULL, NULL), PLH_USAGE);
  CHECK_RC(plh_shm_reader_close(NULL), PLH_OK);
  CHECK_RC(plh_publisher_open(NULL, "c", NULL, NULL, NULL), PLH_USAGE);
  CHECK_RC(plh_publisher_send(NULL, "x", 1, 0, NULL), PLH_USAGE);
  CHECK_RC(plh_publisher_endpoint(NULL, NULL), PLH_USAGE);
  CHECK_RC(plh_publisher_wait_subscribers(NULL, 1, 0), PLH_USAGE);
  CHECK_RC(plh_publisher_close(NULL), PLH_OK);
  CHECK_RC(plh_subscriber_open(NULL, "c", NULL, 0, NULL, 0), PLH_USAGE);
  CHECK_RC(plh_subscriber_recv(NULL, 0, &m), PLH_USAGE);
  uint64_t sizes[2];
  CHECK_RC(plh_subscriber_recv_many(NULL, 0, buf, 0, sizes, NULL, NULL, 2, &got, NULL), PLH_USAGE);
  CHECK_RC(plh_subscriber_gaps(NULL, sizes), PLH_USAGE);
  CHECK_RC(plh_subscriber_close(NULL), PLH_OK);
  CHECK_RC(plh_broker_ping(NULL, NULL), PLH_USAGE);
  CHECK_RC(plh_broker_list(NULL, NULL), PLH_USAGE);
  CHECK_RC(plh_broker_info(NULL, NULL, &json), PLH_USAGE);
  CHECK(json == NULL);

  /* bad sizes and call order on a live handle */
  CHECK_RC(plh_shm_writer_open(&w, name, 1, 4, 64, "latest", NULL), PLH_OK);
  CHECK_RC(plh_shm_writer_end(w, 1, 0, 0, NULL, NULL), PLH_USAGE); /* nothing begun */
  CHECK_RC(plh_shm_writer_begin(w, 1000, NULL, &cap), PLH_USAGE);
  CHECK_RC(plh_shm_writer_begin(w, 1000, &buf, &cap), PLH_OK);
  CHECK_RC(plh_shm_writer_end(w, 65, 0, 0, NULL, NULL), PLH_USAGE); /* over slot_size */
  CHECK(strstr(plh_last_error(), "slot_size") != NULL);
  CHECK_RC(plh_shm_writer_end(w, 64, 0, 0, NULL, NULL), PLH_OK);   /* still open after the refusal */
  CHECK_RC(plh_shm_writer_publish(w, NULL, 1, 0, 0, NULL, 0, NULL), PLH_USAGE);
  static char big[65];
  CHECK_RC(plh_shm_writer_publish(w, big, sizeof big, 0, 0, NULL, 0, NULL), PLH_USAGE);
  CHECK_RC(plh_shm_reader_open(&r, name, "newest"), PLH_USAGE);
  CHECK_RC(plh_shm_reader_open(&r, name, "latest"), PLH_OK);
  CHECK_RC(plh_shm_reader_acquire(r, 0, NULL), PLH_USAGE);
  CHECK_RC(plh_shm_reader_skipped(r, NULL), PLH_USAGE);
  static unsigned char small[16];
  CHECK_RC(plh_shm_reader_read_many(r, 0, small, sizeof small, &s, 1, &got, NULL), PLH_USAGE); /* < slot_size */
  CHECK_RC(plh_shm_reader_read_many(r, 0, small, sizeof small, &s, 0, &got, NULL), PLH_USAGE); /* max 0 */
  CHECK_RC(plh_shm_reader_read_many(r, 0, small, sizeof small, NULL, 1, &got, NULL), PLH_USAGE);
  CHECK_RC(plh_shm_reader_release(r, NULL), PLH_OK); /* nothing held: fine */
  CHECK_RC(plh_shm_reader_close(r), PLH_OK);
  CHECK_RC(plh_shm_writer_close(w), PLH_OK);
  CHECK_RC(plh_shm_remove(name), PLH_OK);

  /* the message is per thread and cleared by a successful call */
  CHECK_RC(plh_shm_remove("no-such-segment-capi"), PLH_NOT_FOUND);
  CHECK(strstr(plh_last_error(), "not found") != NULL);
  CHECK(strcmp(plh_version(), "") != 0);

  /* unreachable broker: status 5, not a hang */
  CHECK_RC(plh_publisher_open(NULL, "c", NULL, "tcp://127.0.0.1:1", NULL), PLH_USAGE);
  plh_publisher* p = NULL;
  CHECK_RC(plh_publisher_open(&p, "bad channel!", NULL, "tcp://127.0.0.1:1", NULL), PLH_USAGE);
  CHECK(p == NULL);
  CHECK_RC(plh_publisher_open(&p, "c", "fanout", "tcp://127.0.0.1:1", NULL), PLH_USAGE);
  CHECK(p == NULL);

  /* request/reply: NULL handles and arguments, bad values */
  plh_requester* rq = NULL;
  plh_replier* rp = NULL;
  plh_request req;
  const void* reply = NULL;
  size_t reply_size = 0;
  uint32_t status = 0;
  const char* rep_ep = NULL;
  CHECK_RC(plh_requester_open(NULL, "svc", NULL, 0), PLH_USAGE);
  CHECK_RC(plh_requester_open(&rq, NULL, NULL, 0), PLH_USAGE);
  CHECK_RC(plh_requester_open(&rq, "bad service!", "tcp://127.0.0.1:1", 0), PLH_USAGE);
  CHECK_RC(plh_requester_open(&rq, "svc", "tcp://127.0.0.1:1", 0), PLH_UNREACHABLE);
  CHECK(rq == NULL);
  CHECK_RC(plh_requester_request(NULL, "x", 1, 0, &reply, &reply_size, &status), PLH_USAGE);
  CHECK_RC(plh_requester_send(NULL, "x", 1), PLH_USAGE);
  CHECK_RC(plh_requester_recv(NULL, 0, &reply, &reply_size, NULL), PLH_USAGE);
  CHECK_RC(plh_requester_close(NULL), PLH_OK);
  CHECK_RC(plh_replier_open(NULL, NULL, NULL, NULL, 1), PLH_USAGE);
  CHECK_RC(plh_replier_open(&rp, NULL, NULL, NULL, 0), PLH_USAGE);
  CHECK_RC(plh_replier_open(&rp, NULL, NULL, "nonsense://x", 1), PLH_FAILURE);
  CHECK(rp == NULL);
  CHECK_RC(plh_replier_recv(NULL, 0, &req), PLH_USAGE);
  CHECK_RC(plh_replier_send(NULL, 1, "x", 1), PLH_USAGE);
  CHECK_RC(plh_replier_send_error(NULL, 1, 1, "x"), PLH_USAGE);
  CHECK_RC(plh_replier_endpoint(NULL, &rep_ep), PLH_USAGE);
  CHECK_RC(plh_replier_close(NULL), PLH_OK);
  /* live handles: call order, unknown tokens, timeouts */
  CHECK_RC(plh_replier_open(&rp, NULL, NULL, NULL, 1), PLH_OK);
  if (rp) {
    CHECK_RC(plh_replier_endpoint(rp, &rep_ep), PLH_OK);
    CHECK_RC(plh_replier_recv(rp, 10, &req), PLH_TIMEOUT);
    CHECK_RC(plh_replier_recv(rp, 0, NULL), PLH_USAGE);
    CHECK_RC(plh_replier_send(rp, 42, "x", 1), PLH_USAGE);
    CHECK_RC(plh_replier_send(rp, 42, NULL, 1), PLH_USAGE);
    CHECK_RC(plh_replier_send_error(rp, 42, 0, "x"), PLH_USAGE);
    CHECK_RC(plh_requester_open(&rq, rep_ep, NULL, 0), PLH_OK);
    if (rq) {
      CHECK_RC(plh_requester_recv(rq, 0, &reply, &reply_size, NULL), PLH_USAGE); /* nothing sent */
      CHECK_RC(plh_requester_request(rq, NULL, 1, 0, &reply, &reply_size, NULL), PLH_USAGE);
      CHECK_RC(plh_requester_request(rq, "x", 1, 0, NULL, &reply_size, NULL), PLH_USAGE);
      /* no reply (the replier does not answer): timeout, then the request is still in flight */
      CHECK_RC(plh_requester_request(rq, "x", 1, 50, &reply, &reply_size, &status), PLH_TIMEOUT);
      CHECK_RC(plh_replier_recv(rp, 5000, &req), PLH_OK);
      CHECK(req.size == 1 && memcmp(req.data, "x", 1) == 0);
      CHECK_RC(plh_replier_send(rp, req.token, "y", 1), PLH_OK);
      CHECK_RC(plh_replier_send(rp, req.token, "y", 1), PLH_USAGE); /* answered already */
      CHECK_RC(plh_requester_recv(rq, 5000, &reply, &reply_size, &status), PLH_OK);
      CHECK(reply_size == 1 && memcmp(reply, "y", 1) == 0 && status == 0);
      CHECK_RC(plh_requester_close(rq), PLH_OK);
    }
    CHECK_RC(plh_replier_close(rp), PLH_OK);
  }
  return failures;
}

/* Starts plh-broker on an ephemeral port; writes its endpoint. */
static pid_t start_broker(char* endpoint, size_t n) {
  int fds[2];
  if (pipe(fds) != 0) return -1;
  pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], 1);
    close(fds[0]);
    close(fds[1]);
    execl(PLH_BROKER_BIN, "plh-broker", "--endpoint", "tcp://127.0.0.1:0", "-q", (char*)NULL);
    _exit(127);
  }
  close(fds[1]);
  char line[1024];
  size_t used = 0;
  while (used + 1 < sizeof line) {
    struct pollfd pfd = {fds[0], POLLIN, 0};
    if (poll(&pfd, 1, 10000) <= 0) break;
    ssize_t k = read(fds[0], line + used, 1);
    if (k <= 0) break;
    if (line[used] == '\n') break;
    ++used;
  }
  line[used] = '\0';
  close(fds[0]);
  const char* key = "\"endpoint\":\"";
  const char* at = strstr(line, key);
  if (!at) {
    fprintf(stderr, "no ready line from plh-broker: '%s'\n", line);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    return -1;
  }
  at += strlen(key);
  size_t len = strcspn(at, "\"");
  if (len >= n) len = n - 1;
  memcpy(endpoint, at, len);
  endpoint[len] = '\0';
  return pid;
}

static void stop_broker(pid_t pid) {
  kill(pid, SIGTERM);
  waitpid(pid, NULL, 0);
}

static int test_broker(void) {
  char* json = NULL;
  /* nothing listens on port 1: unreachable */
  CHECK_RC(plh_broker_ping("tcp://127.0.0.1:1", &json), PLH_UNREACHABLE);
  CHECK(json == NULL);
  char ep[256];
  pid_t pid = start_broker(ep, sizeof ep);
  CHECK(pid > 0);
  if (pid <= 0) return failures;
  CHECK_RC(plh_broker_ping(ep, &json), PLH_OK);
  CHECK(json && json[0] == '{' && strstr(json, "\"version\"") != NULL);
  plh_free(json);
  json = NULL;
  CHECK_RC(plh_broker_list(ep, &json), PLH_OK);
  CHECK(json && json[0] != '\0');
  plh_free(json);
  json = NULL;
  CHECK_RC(plh_broker_info(ep, "no-such-channel", &json), PLH_NOT_FOUND);
  CHECK(json == NULL);

  /* a registered channel shows in list and info */
  plh_publisher* p = NULL;
  CHECK_RC(plh_publisher_open(&p, "capi-info", NULL, ep, "cam@2"), PLH_OK);
  CHECK_RC(plh_broker_info(ep, "capi-info", &json), PLH_OK);
  CHECK(json && strstr(json, "capi-info") != NULL);
  plh_free(json);
  json = NULL;
  CHECK_RC(plh_broker_list(ep, &json), PLH_OK);
  CHECK(json && strstr(json, "capi-info") != NULL);
  plh_free(json);
  /* a second producer of the same channel is refused (not a crash) */
  plh_publisher* p2 = NULL;
  int rc = plh_publisher_open(&p2, "capi-info", NULL, ep, NULL);
  CHECK(rc != PLH_OK && p2 == NULL);
  CHECK_RC(plh_publisher_close(p), PLH_OK);
  /* a subscriber of a missing channel: not found, or timeout while waiting */
  plh_subscriber* s = NULL;
  CHECK_RC(plh_subscriber_open(&s, "capi-missing", ep, 0, NULL, 0), PLH_NOT_FOUND);
  CHECK_RC(plh_subscriber_open(&s, "capi-missing", ep, 1, NULL, 100), PLH_TIMEOUT);
  CHECK(s == NULL);
  stop_broker(pid);
  return failures;
}

enum { kMessages = 200 };

static int subscriber_child(const char* ep) {
  plh_subscriber* s = NULL;
  if (plh_subscriber_open(&s, "capi-stream", ep, 1, NULL, 10000) != PLH_OK) {
    fprintf(stderr, "child: open: %s\n", plh_last_error());
    return 10;
  }
  plh_message m;
  uint64_t n = 0;
  for (;;) {
    int rc = plh_subscriber_recv(s, 10000, &m);
    if (rc != PLH_OK) {
      fprintf(stderr, "child: recv: %d %s\n", rc, plh_last_error());
      return 11;
    }
    if (m.ended) break;
    char want[32];
    int len = snprintf(want, sizeof want, "message %llu", (unsigned long long)n);
    if (m.seq != n + 1 || m.size != (uint64_t)len || memcmp(m.data, want, (size_t)len) != 0 || m.ts_ns <= 0) {
      fprintf(stderr, "child: message %llu wrong (seq %llu)\n", (unsigned long long)n, (unsigned long long)m.seq);
      return 12;
    }
    ++n;
  }
  if (n != kMessages || m.gaps != 0) {
    fprintf(stderr, "child: %llu messages, %llu gaps\n", (unsigned long long)n, (unsigned long long)m.gaps);
    return 13;
  }
  /* after the end: stays ended */
  if (plh_subscriber_recv(s, 0, &m) != PLH_OK || !m.ended) return 14;
  return plh_subscriber_close(s) == PLH_OK ? 0 : 15;
}

static int test_pubsub(void) {
  char ep[256];
  pid_t broker = start_broker(ep, sizeof ep);
  CHECK(broker > 0);
  if (broker <= 0) return failures;
  fflush(stderr);
  pid_t child = fork();
  if (child == 0) _exit(subscriber_child(ep));
  plh_publisher* p = NULL;
  CHECK_RC(plh_publisher_open(&p, "capi-stream", "pubsub", ep, NULL), PLH_OK);
  if (p) {
    const char* dep = NULL;
    CHECK_RC(plh_publisher_endpoint(p, &dep), PLH_OK);
    CHECK(dep && strncmp(dep, "tcp://", 6) == 0);
    CHECK_RC(plh_publisher_wait_subscribers(p, 1, 10000), PLH_OK);
    for (int i = 0; i < kMessages; ++i) {
      char msg[32];
      int len = snprintf(msg, sizeof msg, "message %d", i);
      uint64_t seq = 0;
      CHECK_RC(plh_publisher_send(p, msg, (size_t)len, 0, &seq), PLH_OK);
      CHECK(seq == (uint64_t)i + 1);
    }
    CHECK_RC(plh_publisher_send(p, NULL, 3, 0, NULL), PLH_USAGE);
    CHECK_RC(plh_publisher_close(p), PLH_OK);
  }
  int status = 0;
  waitpid(child, &status, 0);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  stop_broker(broker);
  return failures;
}

/* ---- request/reply ---------------------------------------------------------------------- */

/* A C replier serving until it has answered "bye": upper-cases; "fail" gets an error reply. */
static int replier_child(const char* ep, const char* service) {
  plh_replier* rp = NULL;
  if (plh_replier_open(&rp, service, ep, NULL, 2) != PLH_OK) {
    fprintf(stderr, "replier: open: %s\n", plh_last_error());
    return 20;
  }
  for (;;) {
    plh_request req;
    int rc = plh_replier_recv(rp, 20000, &req);
    if (rc != PLH_OK) {
      fprintf(stderr, "replier: recv: %d %s\n", rc, plh_last_error());
      return 21;
    }
    char buf[256];
    size_t n = req.size < sizeof buf ? (size_t)req.size : sizeof buf;
    if (n) memcpy(buf, req.data, n);
    if (n == 4 && memcmp(buf, "fail", 4) == 0) {
      if (plh_replier_send_error(rp, req.token, 7, "bad thing\nsecond line") != PLH_OK) return 22;
      continue;
    }
    for (size_t i = 0; i < n; ++i)
      if (buf[i] >= 'a' && buf[i] <= 'z') buf[i] = (char)(buf[i] - 'a' + 'A');
    if (plh_replier_send(rp, req.token, buf, n) != PLH_OK) return 23;
    if (n == 3 && memcmp(buf, "BYE", 3) == 0) break;
  }
  return plh_replier_close(rp) == PLH_OK ? 0 : 24;
}

static pid_t spawn(const char* const* argv, int* out_fd) {
  int fds[2] = {-1, -1};
  if (out_fd && pipe(fds) != 0) return -1;
  fflush(stderr);
  pid_t pid = fork();
  if (pid == 0) {
    if (out_fd) {
      dup2(fds[1], 1);
      close(fds[0]);
      close(fds[1]);
    }
    execv(argv[0], (char* const*)argv);
    _exit(127);
  }
  if (out_fd) {
    close(fds[1]);
    *out_fd = fds[0];
  }
  return pid;
}

static int test_reqrep(void) {
  char ep[256];
  pid_t broker = start_broker(ep, sizeof ep);
  CHECK(broker > 0);
  if (broker <= 0) return failures;
  const void* reply = NULL;
  size_t reply_size = 0;
  uint32_t status = 99;

  /* C requester <-> C replier, found through the broker */
  plh_requester* rq = NULL;
  CHECK_RC(plh_requester_open(&rq, "capi-svc", ep, 0), PLH_NOT_FOUND); /* no server yet */
  CHECK_RC(plh_requester_open(&rq, "capi-svc", ep, 1), PLH_OK);     /* wait: requests wait for one */
  fflush(stderr);
  pid_t child = fork();
  if (child == 0) _exit(replier_child(ep, "capi-svc"));
  if (rq) {
    CHECK_RC(plh_requester_request(rq, "hello", 5, 20000, &reply, &reply_size, &status), PLH_OK);
    CHECK(reply_size == 5 && memcmp(reply, "HELLO", 5) == 0 && status == 0);
    CHECK_RC(plh_requester_request(rq, "fail", 4, 20000, &reply, &reply_size, &status), PLH_FAILURE);
    CHECK(status == 7 && strstr(plh_last_error(), "bad thing") != NULL && strstr(plh_last_error(), "second") == NULL);
    CHECK_RC(plh_requester_request(rq, "", 0, 20000, &reply, &reply_size, &status), PLH_OK);
    CHECK(reply_size == 0 && status == 0);
    CHECK_RC(plh_requester_request(rq, "bye", 3, 20000, &reply, &reply_size, &status), PLH_OK);
    CHECK(reply_size == 3 && memcmp(reply, "BYE", 3) == 0);
  }
  int st = 0;
  waitpid(child, &st, 0);
  CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  /* the server is gone: a request times out waiting for one */
  if (rq) CHECK_RC(plh_requester_request(rq, "x", 1, 300, &reply, &reply_size, &status), PLH_TIMEOUT);
  CHECK_RC(plh_requester_close(rq), PLH_OK);

  /* C requester -> plh-rep */
  const char* rep_argv[] = {PLH_REP_BIN, "capi-tool", "--broker", ep, "--", "tr", "a-z", "A-Z", NULL};
  pid_t rep = spawn(rep_argv, NULL);
  CHECK(rep > 0);
  rq = NULL;
  CHECK_RC(plh_requester_open(&rq, "capi-tool", ep, 1), PLH_OK);
  if (rq) {
    CHECK_RC(plh_requester_request(rq, "abc", 3, 20000, &reply, &reply_size, &status), PLH_OK);
    CHECK(reply_size == 3 && memcmp(reply, "ABC", 3) == 0);
    CHECK_RC(plh_requester_close(rq), PLH_OK);
  }
  kill(rep, SIGTERM);
  waitpid(rep, NULL, 0);

  /* plh-req -> C replier */
  plh_replier* rp = NULL;
  CHECK_RC(plh_replier_open(&rp, "capi-c", ep, NULL, 1), PLH_OK);
  if (rp) {
    int out = -1;
    const char* req_argv[] = {PLH_REQ_BIN, "capi-c", "--broker", ep, "-W", "20s", "ping", NULL};
    pid_t req = spawn(req_argv, &out);
    plh_request rq1;
    CHECK_RC(plh_replier_recv(rp, 20000, &rq1), PLH_OK);
    CHECK(rq1.size == 4 && memcmp(rq1.data, "ping", 4) == 0 && rq1.id != 0);
    CHECK_RC(plh_replier_send(rp, rq1.token, "pong", 4), PLH_OK);
    char got[64] = {0};
    size_t used = 0;
    for (;;) {
      ssize_t k = read(out, got + used, sizeof got - 1 - used);
      if (k <= 0) break;
      used += (size_t)k;
    }
    close(out);
    waitpid(req, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK(strcmp(got, "pong\n") == 0);
    CHECK_RC(plh_replier_close(rp), PLH_OK);
  }
  stop_broker(broker);
  return failures;
}

/* ---- pipeline ---------------------------------------------------------------------------- */

enum { kWork = 300 };

/* A pipeline worker: writes the seq of every message it gets to fd; many: with
 * plh_subscriber_recv_many. */
static int worker_child(const char* ep, int fd, int many) {
  plh_subscriber* s = NULL;
  if (plh_subscriber_open(&s, "capi-work", ep, 1, NULL, 10000) != PLH_OK) {
    fprintf(stderr, "worker: open: %s\n", plh_last_error());
    return 30;
  }
  plh_message m;
  while (many) {
    static unsigned char buf[4096];
    uint64_t sizes[16], seqs[16];
    int64_t ts[16];
    size_t got = 0, used = 0;
    int ended = 0;
    int rc = plh_subscriber_recv_many(s, 20000, buf, sizeof buf, sizes, seqs, ts, 16, &got, &ended);
    if (rc != PLH_OK) {
      fprintf(stderr, "worker: recv_many: %d %s\n", rc, plh_last_error());
      return 35;
    }
    if (got == 0) {
      if (!ended) return 36;
      return plh_subscriber_close(s) == PLH_OK ? 0 : 34;
    }
    for (size_t i = 0; i < got; ++i) {
      char want[32];
      int len = snprintf(want, sizeof want, "job %llu", (unsigned long long)seqs[i]);
      if (sizes[i] != (uint64_t)len || memcmp(buf + used, want, (size_t)len) != 0 || ts[i] <= 0) return 37;
      used += sizes[i];
      if (write(fd, &seqs[i], sizeof seqs[i]) != (ssize_t)sizeof seqs[i]) return 33;
    }
  }
  for (;;) {
    int rc = plh_subscriber_recv(s, 20000, &m);
    if (rc != PLH_OK) {
      fprintf(stderr, "worker: recv: %d %s\n", rc, plh_last_error());
      return 31;
    }
    if (m.ended) break;
    char want[32];
    int len = snprintf(want, sizeof want, "job %llu", (unsigned long long)m.seq);
    if (m.size != (uint64_t)len || memcmp(m.data, want, (size_t)len) != 0) return 32;
    if (write(fd, &m.seq, sizeof m.seq) != (ssize_t)sizeof m.seq) return 33;
  }
  return plh_subscriber_close(s) == PLH_OK ? 0 : 34;
}

static int test_pipeline(void) {
  char ep[256];
  pid_t broker = start_broker(ep, sizeof ep);
  CHECK(broker > 0);
  if (broker <= 0) return failures;
  plh_publisher* p = NULL;
  CHECK_RC(plh_publisher_open(&p, "capi-work", "pipeline", ep, NULL), PLH_OK);
  if (!p) {
    stop_broker(broker);
    return failures;
  }
  /* no worker: the first message waits inside for one, the next send times out (not sent) */
  uint64_t seq = 0;
  CHECK_RC(plh_publisher_send(p, "job 1", 5, 50, &seq), PLH_OK);
  CHECK(seq == 1);
  CHECK_RC(plh_publisher_send(p, "job 2", 5, 50, &seq), PLH_TIMEOUT);
  int fds[2];
  CHECK(pipe(fds) == 0);
  pid_t workers[2];
  for (int i = 0; i < 2; ++i) {
    fflush(stderr);
    workers[i] = fork();
    if (workers[i] == 0) {
      close(fds[0]);
      _exit(worker_child(ep, fds[1], i));
    }
  }
  close(fds[1]);
  CHECK_RC(plh_publisher_wait_subscribers(p, 2, 10000), PLH_OK);
  for (int i = 2; i <= kWork; ++i) {
    char msg[32];
    int len = snprintf(msg, sizeof msg, "job %d", i);
    CHECK_RC(plh_publisher_send(p, msg, (size_t)len, 20000, &seq), PLH_OK);
    CHECK(seq == (uint64_t)i);
  }
  CHECK_RC(plh_publisher_close(p), PLH_OK);
  static int seen[kWork + 1];
  uint64_t got_seq = 0;
  while (read(fds[0], &got_seq, sizeof got_seq) == (ssize_t)sizeof got_seq)
    if (got_seq >= 1 && got_seq <= kWork) ++seen[got_seq];
  close(fds[0]);
  int once = 0;
  for (int i = 1; i <= kWork; ++i) once += seen[i] == 1;
  CHECK(once == kWork); /* each job exactly once (nothing failed, so no redelivery) */
  for (int i = 0; i < 2; ++i) {
    int st = 0;
    waitpid(workers[i], &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  }
  stop_broker(broker);
  return failures;
}

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: plh-capi-tests shm|bad-input|broker|pubsub|reqrep|pipeline\n");
    return 2;
  }
  int rc;
  if (strcmp(argv[1], "shm") == 0) rc = test_shm();
  else if (strcmp(argv[1], "bad-input") == 0) rc = test_bad_input();
  else if (strcmp(argv[1], "broker") == 0) rc = test_broker();
  else if (strcmp(argv[1], "pubsub") == 0) rc = test_pubsub();
  else if (strcmp(argv[1], "reqrep") == 0) rc = test_reqrep();
  else if (strcmp(argv[1], "pipeline") == 0) rc = test_pipeline();
  else {
    fprintf(stderr, "unknown test '%s'\n", argv[1]);
    return 2;
  }
  if (rc == 0) printf("%s: ok\n", argv[1]);
  return rc == 0 ? 0 : 1;
}
