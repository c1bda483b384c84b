/*
 * The trigger for OOM kills. Writes CLOCK_MONOTONIC (ns) to the file named by argv[1] (or
 * stdout with "-") just before it starts touching memory, then touches argv[2] MiB (default
 * 256) until the memory cgroup's limit OOM-kills it. Built static so it runs in a busybox
 * container. The time includes the page faults up to the limit (a few ms for 32 MiB), for
 * every reader alike.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
  size_t mb = argc > 2 ? (size_t)atol(argv[2]) : 256;
  /* volatile: the stores must happen (the compiler may drop stores to memory never read) */
  volatile char *p = malloc(mb << 20);
  if (!p) return 2;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  char line[64];
  int len = snprintf(line, sizeof line, "%lld\n", (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
  if (argc > 1 && strcmp(argv[1], "-") != 0) {
    int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return 3;
    if (write(fd, line, len) != len) return 3;
    close(fd);
  } else {
    if (write(1, line, len) != len) return 3;
  }
  for (size_t i = 0; i < (mb << 20); i += 4096) p[i] = 1;
  return 0; /* not reached under the limit */
}
