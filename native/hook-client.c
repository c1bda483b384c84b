/*
 * cgwatchdog-hook: the native OCI hook and Docker runc wrapper of cgwatchdog.
 *
 * A Node process start alone costs 116-151 ms here (`node -e 0`, Node 20), the hook's budget
 * is 30 ms p99 of a whole container start, and the Docker wrapper runs for every runc call.
 * So this client only carries bytes: the policy is computed by the running daemon (its hook
 * socket, src/hook/hook-server.ts) with the very code of the Node hook. When the daemon does
 * not answer (not running, refusing, slow, garbage), it execs the Node hook with the same
 * input, whose behaviour (fail open / closed, records) is then exactly what it always was.
 *
 *   cgwatchdog-hook [--socket PATH] [--timeout-ms N] --node NODE --cli CLI [--config FILE] hook <stage>
 *   cgwatchdog-hook [--socket PATH] [--timeout-ms N] --node NODE --cli CLI [--config FILE] [--runc RUNC]
 *                   runc-wrapper -- <runc args...>
 *   <copy>  <runc args...>    a copy installed with <copy>.conf beside it (install-hooks --runtime
 *                             docker): the options come from that file, argv is runc's.
 *
 * Build: gcc -O2 -static -s -o dist/native/cgwatchdog-hook native/hook-client.c
 * No shell is ever run; every path is absolute.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* install.ts's MARK: --uninstall removes only files that carry it (this binary's copy does). */
static const char MARK[] = "cgwatchdog install-hooks: native hook client";
#define FRAME_MAX (4u * 1024u * 1024u)
/* What the Node hook would still read; above the socket's cap the Node hook gets it all. */
#define INPUT_MAX (256u * 1024u * 1024u)
#define DEFAULT_SOCKET "/run/cgwatchdog/hook.sock"
#define DEFAULT_TIMEOUT_MS 2000

struct buf {
  char *p;
  size_t n, cap;
};

static void die(const char *msg) {
  dprintf(2, "cgwatchdog-hook: %s\n", msg);
  _exit(1);
}

static void put(struct buf *b, const char *s, size_t n) {
  if (b->n + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->n + n + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) die("out of memory");
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->n, s, n);
  b->n += n;
  b->p[b->n] = 0;
}
static void puts_(struct buf *b, const char *s) { put(b, s, strlen(s)); }

/* A JSON string: control bytes, '"' and '\\' escaped, every other byte as it is (Node decodes the
 * frame as UTF-8 exactly as it decodes the stdin the Node hook reads: bad bytes become U+FFFD). */
static void put_json_str(struct buf *b, const char *s, size_t n) {
  put(b, "\"", 1);
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') {
      char e[2] = {'\\', (char)c};
      put(b, e, 2);
    } else if (c < 0x20) {
      char e[7];
      snprintf(e, sizeof e, "\\u%04x", c);
      put(b, e, 6);
    } else {
      put(b, (const char *)&s[i], 1);
    }
  }
  put(b, "\"", 1);
}

static int read_fd_all(int fd, struct buf *b, size_t max) {
  char tmp[65536];
  for (;;) {
    ssize_t r = read(fd, tmp, sizeof tmp);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -1;
    if (r == 0) return 0;
    if (b->n + (size_t)r > max) {
      errno = EFBIG;
      return -1;
    }
    put(b, tmp, (size_t)r);
  }
}

static int write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* ---- the daemon's answer: {exitCode, stdout, log[]}, a small strict JSON reader ---- */

struct json {
  const char *p, *end;
  int depth;
};

static void ws(struct json *j) {
  while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) j->p++;
}

static void put_utf8(struct buf *b, uint32_t cp) {
  char u[4];
  size_t n;
  if (cp < 0x80) { u[0] = (char)cp; n = 1; }
  else if (cp < 0x800) { u[0] = (char)(0xc0 | (cp >> 6)); u[1] = (char)(0x80 | (cp & 0x3f)); n = 2; }
  else if (cp < 0x10000) { u[0] = (char)(0xe0 | (cp >> 12)); u[1] = (char)(0x80 | ((cp >> 6) & 0x3f)); u[2] = (char)(0x80 | (cp & 0x3f)); n = 3; }
  else { u[0] = (char)(0xf0 | (cp >> 18)); u[1] = (char)(0x80 | ((cp >> 12) & 0x3f)); u[2] = (char)(0x80 | ((cp >> 6) & 0x3f)); u[3] = (char)(0x80 | (cp & 0x3f)); n = 4; }
  put(b, u, n);
}

static int hex4(struct json *j, uint32_t *v) {
  if (j->end - j->p < 4) return -1;
  *v = 0;
  for (int i = 0; i < 4; i++) {
    char c = *j->p++;
    *v <<= 4;
    if (c >= '0' && c <= '9') *v |= (uint32_t)(c - '0');
    else if (c >= 'a' && c <= 'f') *v |= (uint32_t)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') *v |= (uint32_t)(c - 'A' + 10);
    else return -1;
  }
  return 0;
}

/* A string into out (NULL: skipped). Lone surrogates become U+FFFD, as Node writes them. */
static int jstr(struct json *j, struct buf *out) {
  struct buf sink = {0};
  if (!out) out = &sink;
  if (j->p >= j->end || *j->p != '"') return -1;
  j->p++;
  while (j->p < j->end) {
    unsigned char c = (unsigned char)*j->p++;
    if (c == '"') { free(sink.p); return 0; }
    if (c < 0x20) break;
    if (c != '\\') { put(out, (const char *)&c, 1); continue; }
    if (j->p >= j->end) break;
    char e = *j->p++;
    uint32_t cp, lo;
    switch (e) {
      case '"': case '\\': case '/': put(out, &e, 1); break;
      case 'b': put(out, "\b", 1); break;
      case 'f': put(out, "\f", 1); break;
      case 'n': put(out, "\n", 1); break;
      case 'r': put(out, "\r", 1); break;
      case 't': put(out, "\t", 1); break;
      case 'u':
        if (hex4(j, &cp)) goto bad;
        if (cp >= 0xd800 && cp < 0xdc00 && j->end - j->p >= 6 && j->p[0] == '\\' && j->p[1] == 'u') {
          const char *save = j->p;
          j->p += 2;
          if (hex4(j, &lo)) goto bad;
          if (lo >= 0xdc00 && lo < 0xe000) cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
          else { j->p = save; cp = 0xfffd; }
        } else if (cp >= 0xd800 && cp < 0xe000) cp = 0xfffd;
        put_utf8(out, cp);
        break;
      default: goto bad;
    }
  }
bad:
  free(sink.p);
  return -1;
}

static int jnum(struct json *j, long *v) {
  const char *s = j->p;
  if (j->p < j->end && *j->p == '-') j->p++;
  while (j->p < j->end && ((*j->p >= '0' && *j->p <= '9') || *j->p == '.' || *j->p == 'e' || *j->p == 'E' || *j->p == '+' || *j->p == '-')) j->p++;
  if (j->p == s) return -1;
  char tmp[32];
  size_t n = (size_t)(j->p - s);
  if (n >= sizeof tmp) return -1;
  memcpy(tmp, s, n);
  tmp[n] = 0;
  char *e;
  errno = 0;
  long x = strtol(tmp, &e, 10);
  if (*e || errno) return -1; /* not an integer: exitCode must be one */
  *v = x;
  return 0;
}

static int jskip(struct json *j);

static int jlit(struct json *j, const char *lit) {
  size_t n = strlen(lit);
  if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n)) return -1;
  j->p += n;
  return 0;
}

static int jskip(struct json *j) {
  ws(j);
  if (j->p >= j->end || ++j->depth > 32) return -1;
  int r = -1;
  char c = *j->p;
  if (c == '"') r = jstr(j, NULL);
  else if (c == 't') r = jlit(j, "true");
  else if (c == 'f') r = jlit(j, "false");
  else if (c == 'n') r = jlit(j, "null");
  else if (c == '[' || c == '{') {
    char close = c == '[' ? ']' : '}';
    j->p++;
    ws(j);
    if (j->p < j->end && *j->p == close) { j->p++; r = 0; }
    else for (;;) {
      if (c == '{') {
        ws(j);
        if (jstr(j, NULL)) break;
        ws(j);
        if (j->p >= j->end || *j->p++ != ':') break;
      }
      if (jskip(j)) break;
      ws(j);
      if (j->p < j->end && *j->p == ',') { j->p++; continue; }
      if (j->p < j->end && *j->p == close) { j->p++; r = 0; }
      break;
    }
  } else {
    long v;
    r = jnum(j, &v);
  }
  j->depth--;
  return r;
}

struct answer {
  long exit_code;
  struct buf out;
  struct buf log; /* lines, each ending in '\n' */
};

/* 0: a whole, well-formed answer; -1: garbage (the caller runs the Node hook). */
static int parse_answer(const char *p, size_t n, struct answer *a) {
  struct json j = {p, p + n, 0};
  int have_exit = 0, have_out = 0, have_log = 0;
  ws(&j);
  if (j.p >= j.end || *j.p++ != '{') return -1;
  ws(&j);
  if (j.p < j.end && *j.p == '}') return -1;
  for (;;) {
    struct buf key = {0};
    ws(&j);
    if (jstr(&j, &key)) { free(key.p); return -1; }
    ws(&j);
    if (j.p >= j.end || *j.p++ != ':') { free(key.p); return -1; }
    ws(&j);
    int bad = 0;
    if (key.p && !strcmp(key.p, "exitCode")) { bad = jnum(&j, &a->exit_code); have_exit = 1; }
    else if (key.p && !strcmp(key.p, "stdout")) { bad = jstr(&j, &a->out); have_out = 1; }
    else if (key.p && !strcmp(key.p, "log")) {
      have_log = 1;
      if (j.p >= j.end || *j.p++ != '[') bad = 1;
      ws(&j);
      if (!bad && j.p < j.end && *j.p == ']') j.p++;
      else while (!bad) {
        ws(&j);
        if (jstr(&j, &a->log)) { bad = 1; break; }
        put(&a->log, "\n", 1);
        ws(&j);
        if (j.p < j.end && *j.p == ',') { j.p++; continue; }
        if (j.p < j.end && *j.p == ']') { j.p++; break; }
        bad = 1;
      }
    } else bad = jskip(&j);
    free(key.p);
    if (bad) return -1;
    ws(&j);
    if (j.p < j.end && *j.p == ',') { j.p++; continue; }
    if (j.p < j.end && *j.p == '}') { j.p++; break; }
    return -1;
  }
  ws(&j);
  if (j.p != j.end || !have_exit || !have_out || !have_log || a->exit_code < 0 || a->exit_code > 255) return -1;
  return 0;
}

/* ---- the socket ---- */

static long now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1000L + t.tv_nsec / 1000000L;
}

static int wait_fd(int fd, short ev, long deadline) {
  for (;;) {
    long left = deadline - now_ms();
    if (left <= 0) { errno = ETIMEDOUT; return -1; }
    struct pollfd p = {fd, ev, 0};
    int r = poll(&p, 1, (int)left);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -1;
    if (r > 0) return 0;
  }
}

/* One request, one answer, within timeout_ms. 0: answered (body in resp); -1: why says why not. */
static int ask_daemon(const char *sock, long timeout_ms, const struct buf *req, struct buf *resp, const char **why) {
  long deadline = now_ms() + timeout_ms;
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(sock) >= sizeof sa.sun_path) { *why = "socket path too long"; return -1; }
  strcpy(sa.sun_path, sock);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) { *why = strerror(errno); return -1; }
  /* A unix connect does not block: it connects, or says ENOENT, ECONNREFUSED, or EAGAIN (backlog full). */
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) { *why = strerror(errno); close(fd); return -1; }
  unsigned char head[4] = {(unsigned char)(req->n >> 24), (unsigned char)(req->n >> 16), (unsigned char)(req->n >> 8), (unsigned char)req->n};
  struct buf out = {0};
  put(&out, (const char *)head, 4);
  put(&out, req->p, req->n);
  size_t off = 0;
  while (off < out.n) {
    ssize_t w = send(fd, out.p + off, out.n - off, MSG_NOSIGNAL);
    if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
      if (wait_fd(fd, POLLOUT, deadline)) { *why = strerror(errno); goto fail; }
      continue;
    }
    if (w < 0) { *why = strerror(errno); goto fail; }
    off += (size_t)w;
  }
  free(out.p);
  out.p = NULL;
  size_t want = 0;
  int have_len = 0;
  char tmp[65536];
  for (;;) {
    if (have_len && resp->n == 4 + want) break;
    ssize_t r = read(fd, tmp, sizeof tmp);
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
      if (wait_fd(fd, POLLIN, deadline)) { *why = strerror(errno); goto fail; }
      continue;
    }
    if (r < 0) { *why = strerror(errno); goto fail; }
    if (r == 0) { *why = "the daemon closed the connection without an answer"; goto fail; }
    put(resp, tmp, (size_t)r);
    if (!have_len && resp->n >= 4) {
      const unsigned char *h = (const unsigned char *)resp->p;
      want = ((size_t)h[0] << 24) | ((size_t)h[1] << 16) | ((size_t)h[2] << 8) | h[3];
      if (want > FRAME_MAX) { *why = "answer over the size cap"; goto fail; }
      have_len = 1;
    }
    if (have_len && resp->n > 4 + want) { *why = "bytes after the answer"; goto fail; }
  }
  close(fd);
  memmove(resp->p, resp->p + 4, want);
  resp->n = want;
  return 0;
fail:
  free(out.p);
  close(fd);
  return -1;
}

/* ---- options ---- */

struct opts {
  const char *socket, *node, *cli, *config, *runc;
  long timeout_ms;
};

static int absolute(const char *p) { return p && p[0] == '/'; }

static void need_abs(const char *what, const char *p) {
  if (!absolute(p)) {
    dprintf(2, "cgwatchdog-hook: %s must be an absolute path, got %s\n", what, p ? p : "nothing");
    _exit(2);
  }
}

/* --name VALUE or --name=VALUE; returns 1 and advances *i when argv[*i] is that option. */
static int opt(char **argv, int argc, int *i, const char *name, const char **val) {
  size_t n = strlen(name);
  const char *a = argv[*i];
  if (strncmp(a, name, n)) return 0;
  if (a[n] == '=') { *val = a + n + 1; return 1; }
  if (a[n] == 0 && *i + 1 < argc) { *val = argv[++*i]; return 1; }
  return 0;
}

static void set_opt(struct opts *o, const char *key, const char *val) {
  if (!strcmp(key, "socket")) o->socket = val;
  else if (!strcmp(key, "node")) o->node = val;
  else if (!strcmp(key, "cli")) o->cli = val;
  else if (!strcmp(key, "config")) o->config = val;
  else if (!strcmp(key, "runc")) o->runc = val;
  else if (!strcmp(key, "timeout-ms")) {
    char *e;
    long v = strtol(val, &e, 10);
    if (*e || v < 1 || v > 600000) { dprintf(2, "cgwatchdog-hook: --timeout-ms %s: expected 1-600000\n", val); _exit(2); }
    o->timeout_ms = v;
  } else {
    dprintf(2, "cgwatchdog-hook: unknown option %s\n", key);
    _exit(2);
  }
}

/* <self>.conf: "key=value" lines (socket, timeout-ms, node, cli, config, runc), '#' comments.
 * Trusted only when ours: owned by our euid and writable by nobody else (we run as root). */
static int read_conf(const char *self, struct opts *o) {
  char path[PATH_MAX];
  if (snprintf(path, sizeof path, "%s.conf", self) >= (int)sizeof path) return -1;
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return -1;
  struct stat st;
  if (fstat(fd, &st) || !S_ISREG(st.st_mode)) die("the wrapper's .conf is not a regular file");
  if (st.st_uid != geteuid() || (st.st_mode & 022)) {
    dprintf(2, "cgwatchdog-hook: %s is not owned by uid %u or is writable by others: refused\n", path, (unsigned)geteuid());
    _exit(1);
  }
  struct buf b = {0};
  if (read_fd_all(fd, &b, 65536)) die("cannot read the wrapper's .conf");
  close(fd);
  char *save, *line;
  for (line = strtok_r(b.p ? b.p : (char[]){0}, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    if (line[0] == '#' || line[0] == 0) continue;
    char *eq = strchr(line, '=');
    if (!eq) die("a line of the wrapper's .conf has no '='");
    *eq = 0;
    set_opt(o, line, eq + 1);
  }
  return 0; /* b.p is kept: the options point into it */
}

/* ---- the Node fallback ---- */

/* The input back on fd 0, for the Node hook to read as if it came from the runtime. */
static void stdin_from(const struct buf *in) {
  int fd = memfd_create("cgwatchdog-hook-stdin", 0);
  if (fd >= 0) {
    if (write_all(fd, in->p ? in->p : "", in->n) || lseek(fd, 0, SEEK_SET) < 0) die("cannot refill stdin");
  } else {
    /* No memfd (kernel < 3.17): a pipe, big enough for the input or the Node hook would block us. */
    int p[2];
    if (pipe(p)) die("cannot make a pipe for stdin");
    if (in->n > 65536 && fcntl(p[1], F_SETPIPE_SZ, (int)in->n) < (int)in->n) die("input too large for a pipe and no memfd_create");
    if (write_all(p[1], in->p ? in->p : "", in->n)) die("cannot refill stdin");
    close(p[1]);
    fd = p[0];
  }
  if (fd != 0) {
    if (dup2(fd, 0) < 0) die("cannot refill stdin");
    close(fd);
  }
}

static void node_hook(const struct opts *o, const char *stage, const struct buf *in) {
  stdin_from(in);
  const char *argv[8];
  int n = 0;
  argv[n++] = o->node;
  argv[n++] = o->cli;
  argv[n++] = "hook";
  argv[n++] = stage;
  if (o->config) { argv[n++] = "--config"; argv[n++] = o->config; }
  argv[n] = NULL;
  execv(o->node, (char **)argv);
  dprintf(2, "cgwatchdog-hook: cannot run %s: %s\n", o->node, strerror(errno));
  _exit(1);
}

/* ---- hook mode ---- */

static int hook_mode(const struct opts *o, const char *stage) {
  struct buf in = {0};
  if (read_fd_all(0, &in, INPUT_MAX)) die("cannot read stdin");
  if (in.n > FRAME_MAX - 4096) node_hook(o, stage, &in);
  struct buf req = {0}, resp = {0};
  puts_(&req, "{\"v\":1,\"stage\":");
  put_json_str(&req, stage, strlen(stage));
  puts_(&req, ",\"config\":");
  if (o->config) put_json_str(&req, o->config, strlen(o->config));
  else puts_(&req, "null");
  puts_(&req, ",\"input\":");
  put_json_str(&req, in.p ? in.p : "", in.n);
  puts_(&req, "}");
  const char *why = NULL;
  struct answer a = {0};
  /* No word of it on stderr: the Node hook logs what it does, and a daemon down is normal life. */
  if (req.n > FRAME_MAX || ask_daemon(o->socket, o->timeout_ms, &req, &resp, &why) || parse_answer(resp.p, resp.n, &a)) node_hook(o, stage, &in);
  if (a.log.n) write_all(2, a.log.p, a.log.n);
  if (a.out.n && write_all(1, a.out.p, a.out.n)) return 1;
  return (int)a.exit_code;
}

/* ---- wrapper mode: runc's argv as src/hook/runc-wrapper.ts parseRuncArgs reads it ---- */

static int in_list(const char *name, size_t n, const char *const *list) {
  for (; *list; list++)
    if (strlen(*list) == n && !memcmp(*list, name, n)) return 1;
  return 0;
}

static const char *const GLOBAL_VALUE_FLAGS[] = {"root", "log", "log-format", "criu", "rootless", NULL};
static const char *const CREATE_VALUE_FLAGS[] = {"bundle", "b", "console-socket", "pid-file", "preserve-fds", "process", "p", "cwd", "env", "e", "user", "u", "additional-gids", "g", "cap", "c", "apparmor", "process-label", "cgroup", NULL};

/* flagName(): 0 unless a flag; the name without one or two dashes (and its length), the value after "=" or NULL. */
static int flag_name(const char *arg, const char **name, size_t *nlen, const char **val) {
  if (arg[0] != '-' || !strcmp(arg, "-") || !strcmp(arg, "--")) return 0;
  const char *b = arg + 1;
  if (*b == '-') b++;
  const char *eq = strchr(b, '=');
  *name = b;
  *nlen = eq ? (size_t)(eq - b) : strlen(b);
  *val = eq ? eq + 1 : NULL;
  return 1;
}

struct runc_call {
  const char *command, *bundle, *id, *log, *log_format;
};

static void parse_runc(int argc, char **argv, struct runc_call *c) {
  const char *name, *val;
  size_t n;
  int i = 0;
  memset(c, 0, sizeof *c);
  for (; i < argc; i++) {
    if (!flag_name(argv[i], &name, &n, &val)) break;
    if (in_list(name, n, GLOBAL_VALUE_FLAGS)) {
      if (!val) val = i + 1 < argc ? argv[++i] : "";
      if (n == 3 && !memcmp(name, "log", 3)) c->log = val;
      if (n == 10 && !memcmp(name, "log-format", 10)) c->log_format = val;
    }
  }
  c->command = i < argc ? argv[i] : NULL;
  if (!c->command || (strcmp(c->command, "create") && strcmp(c->command, "run"))) return;
  for (int j = i + 1; j < argc; j++) {
    if (!flag_name(argv[j], &name, &n, &val)) {
      c->id = argv[j];
      continue;
    }
    const char *v = NULL;
    if (in_list(name, n, CREATE_VALUE_FLAGS)) v = val ? val : (j + 1 < argc ? argv[++j] : "");
    if ((n == 6 && !memcmp(name, "bundle", 6)) || (n == 1 && name[0] == 'b')) c->bundle = v;
  }
}

/* path.resolve(cwd, p): lexical, as Node's (no symlinks resolved). */
static char *resolve(const char *p) {
  struct buf in = {0}, out = {0};
  if (p[0] != '/') {
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof cwd)) return NULL;
    puts_(&in, cwd);
    puts_(&in, "/");
  }
  puts_(&in, p);
  char *save, *seg;
  for (seg = strtok_r(in.p, "/", &save); seg; seg = strtok_r(NULL, "/", &save)) {
    if (!strcmp(seg, ".")) continue;
    if (!strcmp(seg, "..")) {
      char *s = out.p ? strrchr(out.p, '/') : NULL;
      if (s) { *s = 0; out.n = (size_t)(s - out.p); }
      continue;
    }
    puts_(&out, "/");
    puts_(&out, seg);
  }
  if (!out.n) puts_(&out, "/");
  free(in.p);
  return out.p;
}

static void runc_log(const struct runc_call *c, const char *lines, size_t n) {
  if (!n || !absolute(c->log)) return;
  int fd = open(c->log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0666);
  if (fd < 0) return; /* nowhere else to say it: stdout and stderr are the container's */
  write_all(fd, lines, n);
  close(fd);
}

static int same_file(const char *a, const char *b) {
  char ra[PATH_MAX], rb[PATH_MAX];
  if (!realpath(a, ra) || !realpath(b, rb)) return !strcmp(a, b);
  return !strcmp(ra, rb);
}

/* findRunc(): the configured one, else a fixed list (never $PATH, which a caller controls), never ourselves. */
static const char *find_runc(const struct opts *o, const char *self) {
  static const char *const candidates[] = {"/usr/bin/runc", "/usr/sbin/runc", "/usr/local/bin/runc", NULL};
  if (o->runc) return access(o->runc, X_OK) == 0 && !same_file(o->runc, self) ? o->runc : NULL;
  for (const char *const *c = candidates; *c; c++)
    if (access(*c, X_OK) == 0 && !same_file(*c, self)) return *c;
  return NULL;
}

static void node_wrapper(const struct opts *o, const char *self, int argc, char **argv) {
  char js[PATH_MAX];
  const char *slash = strrchr(o->cli, '/');
  /* dist/src/cli.js -> dist/src/hook/runc-wrapper-main.js */
  if (snprintf(js, sizeof js, "%.*s/hook/runc-wrapper-main.js", (int)(slash - o->cli), o->cli) >= (int)sizeof js) die("path too long");
  char **a = calloc((size_t)argc + 8, sizeof *a);
  if (!a) die("out of memory");
  int n = 0;
  a[n++] = (char *)o->node;
  a[n++] = js;
  a[n++] = "--self";
  a[n++] = (char *)self;
  if (o->config) { a[n++] = "--config"; a[n++] = (char *)o->config; }
  a[n++] = "--";
  for (int i = 0; i < argc; i++) a[n++] = argv[i];
  a[n] = NULL;
  execv(o->node, a);
  dprintf(2, "cgwatchdog runc wrapper: cannot run %s: %s\n", o->node, strerror(errno));
  _exit(127);
}

/* config.json back in place: a temp file in the bundle, the same mode, renamed over it. */
static int write_config(const char *file, const char *dir, const struct buf *text) {
  struct stat st;
  if (stat(file, &st)) return -1;
  char tmp[PATH_MAX];
  if (snprintf(tmp, sizeof tmp, "%s/.config.json.cgwatchdog-%d", dir, (int)getpid()) >= (int)sizeof tmp) return -1;
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, st.st_mode & 07777);
  if (fd < 0) return -1;
  if (fchmod(fd, st.st_mode & 07777) || write_all(fd, text->p ? text->p : "", text->n) || close(fd)) {
    unlink(tmp);
    return -1;
  }
  if (rename(tmp, file)) {
    unlink(tmp);
    return -1;
  }
  return 0;
}

static int wrapper_mode(const struct opts *o, const char *self, int argc, char **argv) {
  struct runc_call c;
  parse_runc(argc, argv, &c);
  if (c.command && (!strcmp(c.command, "create") || !strcmp(c.command, "run"))) {
    char *bundle = resolve(c.bundle && *c.bundle ? c.bundle : ".");
    if (!bundle) node_wrapper(o, self, argc, argv);
    struct buf file = {0}, text = {0}, req = {0}, resp = {0};
    puts_(&file, bundle);
    puts_(&file, strcmp(bundle, "/") ? "/config.json" : "config.json");
    int fd = open(file.p, O_RDONLY | O_CLOEXEC);
    /* What cannot be read here the Node wrapper reads, fails on and records as it always did. */
    if (fd < 0 || read_fd_all(fd, &text, FRAME_MAX - 65536)) node_wrapper(o, self, argc, argv);
    close(fd);
    char stage[16];
    snprintf(stage, sizeof stage, "runc-%s", c.command);
    puts_(&req, "{\"v\":1,\"stage\":\"");
    puts_(&req, stage);
    puts_(&req, "\",\"config\":");
    if (o->config) put_json_str(&req, o->config, strlen(o->config));
    else puts_(&req, "null");
    if (c.id) { puts_(&req, ",\"id\":"); put_json_str(&req, c.id, strlen(c.id)); }
    if (c.log_format) { puts_(&req, ",\"logFormat\":"); put_json_str(&req, c.log_format, strlen(c.log_format)); }
    puts_(&req, ",\"input\":");
    put_json_str(&req, text.p ? text.p : "", text.n);
    puts_(&req, "}");
    const char *why = NULL;
    struct answer a = {0};
    if (req.n > FRAME_MAX || ask_daemon(o->socket, o->timeout_ms, &req, &resp, &why) || parse_answer(resp.p, resp.n, &a)) node_wrapper(o, self, argc, argv);
    runc_log(&c, a.log.p, a.log.n);
    if (a.exit_code != 0) return (int)a.exit_code;
    /* The daemon recorded the limit as written: the Node wrapper then fails on the write and
     * records that too (the bundle directory is unwritable; runc would fail on it as well). */
    if (a.out.n && write_config(file.p, bundle, &a.out)) node_wrapper(o, self, argc, argv);
  }
  const char *runc = find_runc(o, self);
  if (!runc) {
    const char *msg = o->runc ? "cgwatchdog runc wrapper: the configured runc (hooks.runcPath) is not an executable" : "cgwatchdog runc wrapper: no runc in /usr/bin/runc, /usr/sbin/runc, /usr/local/bin/runc (set hooks.runcPath)";
    struct buf line = {0};
    if (c.log_format && !strcmp(c.log_format, "json")) { puts_(&line, "{\"level\":\"error\",\"msg\":"); put_json_str(&line, msg, strlen(msg)); puts_(&line, "}\n"); }
    else { puts_(&line, "level=error msg="); put_json_str(&line, msg, strlen(msg)); puts_(&line, "\n"); }
    runc_log(&c, line.p, line.n);
    dprintf(2, "%s\n", msg);
    return 127;
  }
  /* execv keeps our fds (--preserve-fds, LISTEN_FDS), stdin, environment, cwd, signal mask and
   * dispositions: runc is in our place, its exit status is dockerd's answer. */
  char **a = calloc((size_t)argc + 2, sizeof *a);
  if (!a) die("out of memory");
  a[0] = (char *)runc;
  for (int i = 0; i < argc; i++) a[i + 1] = argv[i];
  execv(runc, a);
  dprintf(2, "cgwatchdog runc wrapper: cannot run %s: %s\n", runc, strerror(errno));
  return 127;
}

static void usage(void) {
  dprintf(2,
          "usage: cgwatchdog-hook [--socket PATH] [--timeout-ms N] --node NODE --cli CLI [--config FILE] hook <stage>\n"
          "       cgwatchdog-hook [--socket PATH] [--timeout-ms N] --node NODE --cli CLI [--config FILE] [--runc RUNC] runc-wrapper -- <runc args>\n"
          "(%s)\n",
          MARK);
  _exit(2);
}

int main(int argc, char **argv) {
  struct opts o = {.socket = DEFAULT_SOCKET, .timeout_ms = DEFAULT_TIMEOUT_MS};
  static char self[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) die("cannot read /proc/self/exe");
  self[n] = 0;
  /* Docker runs a runtime by its path with runc's argv only: a copy with <copy>.conf is the wrapper. */
  if (read_conf(self, &o) == 0) {
    need_abs("node", o.node);
    need_abs("cli", o.cli);
    need_abs("socket", o.socket);
    if (o.config) need_abs("config", o.config);
    if (o.runc) need_abs("runc", o.runc);
    return wrapper_mode(&o, self, argc - 1, argv + 1);
  }
  int i = 1;
  for (; i < argc; i++) {
    const char *v;
    if (opt(argv, argc, &i, "--socket", &v)) set_opt(&o, "socket", v);
    else if (opt(argv, argc, &i, "--timeout-ms", &v)) set_opt(&o, "timeout-ms", v);
    else if (opt(argv, argc, &i, "--node", &v)) set_opt(&o, "node", v);
    else if (opt(argv, argc, &i, "--cli", &v)) set_opt(&o, "cli", v);
    else if (opt(argv, argc, &i, "--config", &v)) set_opt(&o, "config", v);
    else if (opt(argv, argc, &i, "--runc", &v)) set_opt(&o, "runc", v);
    else break;
  }
  need_abs("--node", o.node);
  need_abs("--cli", o.cli);
  need_abs("--socket", o.socket);
  if (o.config) need_abs("--config", o.config);
  if (o.runc) need_abs("--runc", o.runc);
  if (i + 2 == argc && !strcmp(argv[i], "hook")) return hook_mode(&o, argv[i + 1]);
  if (i + 1 < argc && !strcmp(argv[i], "runc-wrapper") && !strcmp(argv[i + 1], "--")) return wrapper_mode(&o, self, argc - i - 2, argv + i + 2);
  usage();
  return 2;
}
