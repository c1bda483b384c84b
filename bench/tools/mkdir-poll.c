/*
 * New container to limit written, seen from outside: takes CLOCK_MONOTONIC, mkdirs each
 * directory given after the first two arguments (in order, like a runtime making a container's
 * cgroup in each v1 hierarchy), then re-reads argv[1] (the new pids.max) in a tight loop until
 * it no longer says "max", or argv[2] ms pass. Prints "<mkdir ns> <limit ns or -1> <value>".
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static long long now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv) {
  if (argc < 4) { fprintf(stderr, "usage: mkdir-poll PIDS_MAX_FILE TIMEOUT_MS DIR...\n"); return 2; }
  long long t0 = now();
  for (int i = 3; i < argc; i++)
    if (mkdir(argv[i], 0755) < 0) { perror(argv[i]); return 1; }
  long long t1 = now();
  long long deadline = t0 + atoll(argv[2]) * 1000000LL;
  char buf[64];
  for (;;) {
    int fd = open(argv[1], O_RDONLY);
    ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
    if (fd >= 0) close(fd);
    long long t = now();
    if (n > 0) {
      buf[n] = 0;
      if (strncmp(buf, "max", 3) != 0) {
        buf[strcspn(buf, "\n")] = 0;
        printf("%lld %lld %s\n", t1 - t0, t - t0, buf);
        return 0;
      }
    }
    if (t > deadline) { printf("%lld -1 max\n", t1 - t0); return 0; }
    struct timespec nap = {0, 100000};
    nanosleep(&nap, NULL);
  }
}
