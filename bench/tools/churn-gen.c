/*
 * Churn: container cgroups made and removed at a steady rate, shaped like Docker's
 * (<root>/docker/<64 hex> in memory, cpu and pids, pids last as runc does), each given a
 * process that joins it and forks once. The generator itself measures, per cgroup, the time
 * from its first mkdir (CLOCK_MONOTONIC) to the first read of its pids.max that is no longer
 * "max" (pids.max read every 200 us while pending): it does not trust the daemon's figures.
 * A cgroup not limited within 5 s is a miss. Each is removed `lifetime_ms` after its mkdir
 * (once its process has exited).
 *
 *   churn-gen <v1 root, e.g. /sys/fs/cgroup> <rel parent> <per second> <seconds> <lifetime ms>
 *
 * Output: "lat <us>" per limited cgroup, "miss <name>" per miss, then
 * "done made=<n> limited=<n> missed=<n> removed=<n>".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *ctl[3] = {"memory", "cpu", "pids"};
static const char *root, *parent;

typedef struct {
  char name[80];
  long long t0;
  int fd;       /* pids.max, while pending */
  pid_t pid;    /* its process, until reaped */
  int state;    /* 0 pending, 1 limited, 2 missed, 3 removed */
} Cg;

static long long now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static unsigned long long rng;
static unsigned long long next_rand(void) {
  rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
  return rng;
}

static void path_of(char *out, size_t n, const char *c, const char *name, const char *file) {
  if (file) snprintf(out, n, "%s/%s%s/docker/%s/%s", root, c, parent, name, file);
  else snprintf(out, n, "%s/%s%s/docker/%s", root, c, parent, name);
}

static int make(Cg *g) {
  snprintf(g->name, sizeof g->name, "%016llx%016llx%016llx%016llx", next_rand(), next_rand(), next_rand(), next_rand());
  char p[512];
  g->t0 = now_ns();
  for (int i = 0; i < 3; i++) {
    path_of(p, sizeof p, ctl[i], g->name, NULL);
    if (mkdir(p, 0755) != 0) { perror(p); return -1; }
  }
  path_of(p, sizeof p, "pids", g->name, "pids.max");
  g->fd = open(p, O_RDONLY);
  if (g->fd < 0) { perror(p); return -1; }
  g->state = 0;
  pid_t pid = fork();
  if (pid < 0) { perror("fork"); return -1; }
  if (pid == 0) {
    char me[32];
    int len = snprintf(me, sizeof me, "%d", getpid());
    for (int i = 0; i < 3; i++) {
      path_of(p, sizeof p, ctl[i], g->name, "cgroup.procs");
      int fd = open(p, O_WRONLY);
      if (fd < 0 || write(fd, me, len) != len) _exit(3);
      close(fd);
    }
    pid_t c = fork();
    if (c == 0) _exit(0);
    if (c > 0) waitpid(c, NULL, 0);
    _exit(c > 0 ? 0 : 4);
  }
  g->pid = pid;
  return 0;
}

static int removed(Cg *g) {
  char p[512];
  for (int i = 2; i >= 0; i--) {
    path_of(p, sizeof p, ctl[i], g->name, NULL);
    if (rmdir(p) != 0 && errno != ENOENT) return 0;
  }
  return 1;
}

int main(int argc, char **argv) {
  if (argc != 6) { fprintf(stderr, "usage: churn-gen <v1 root> <rel parent> <per s> <seconds> <lifetime ms>\n"); return 2; }
  root = argv[1];
  parent = argv[2];
  double rate = atof(argv[3]);
  int total = (int)(rate * atof(argv[4]));
  long long lifetime = atoll(argv[5]) * 1000000LL;
  long long period = (long long)(1e9 / rate);
  rng = (unsigned long long)now_ns() ^ ((unsigned long long)getpid() << 32);
  Cg *g = calloc(total, sizeof *g);
  setvbuf(stdout, NULL, _IOFBF, 1 << 16);
  int made = 0, limited = 0, missed = 0, gone = 0, first_live = 0;
  long long start = now_ns();
  char buf[64];
  while (gone < total) {
    long long t = now_ns();
    while (made < total && start + made * period <= t) {
      if (make(&g[made]) != 0) return 1;
      made++;
    }
    for (int i = first_live; i < made; i++) {
      Cg *c = &g[i];
      if (c->state == 0) {
        ssize_t n = pread(c->fd, buf, sizeof buf - 1, 0);
        long long at = now_ns();
        if (n > 0 && strncmp(buf, "max", 3) != 0) {
          c->state = 1;
          limited++;
          printf("lat %lld\n", (at - c->t0) / 1000);
        } else if (at - c->t0 > 5000000000LL) {
          c->state = 2;
          missed++;
          printf("miss %s\n", c->name);
        }
        if (c->state != 0) { close(c->fd); c->fd = -1; }
      }
    }
    int st;
    pid_t r;
    while ((r = waitpid(-1, &st, WNOHANG)) > 0)
      for (int i = first_live; i < made; i++) if (g[i].pid == r) { g[i].pid = 0; if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) fprintf(stderr, "process of %s: status %d\n", g[i].name, st); break; }
    t = now_ns();
    for (int i = first_live; i < made; i++) {
      Cg *c = &g[i];
      if (c->state == 1 || c->state == 2) {
        if (c->pid == 0 && t - c->t0 >= lifetime && removed(c)) { c->state = 3; gone++; }
      }
    }
    while (first_live < made && g[first_live].state == 3) first_live++;
    struct timespec ts = {0, 200000};
    nanosleep(&ts, NULL);
  }
  printf("done made=%d limited=%d missed=%d removed=%d\n", made, limited, missed, gone);
  return 0;
}
