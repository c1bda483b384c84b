/*
 * The floor for /dev/kmsg: the least a reader of the kernel log can do. Blocking read(2) on
 * /dev/kmsg from "now" (SEEK_END), one record per read; for each record about a fork rejected
 * by the pids controller or an OOM kill, print the CLOCK_MONOTONIC time it was read (ns) and
 * the message. Nothing else: no parsing beyond a substring test, no counters read.
 * Output: "<ns> <message>\n", line-buffered.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(void) {
  int fd = open("/dev/kmsg", O_RDONLY);
  if (fd < 0) { perror("open /dev/kmsg"); return 1; }
  if (lseek(fd, 0, SEEK_END) < 0) { perror("lseek"); return 1; }
  setvbuf(stdout, NULL, _IOLBF, 0);
  printf("ready\n");
  static char buf[8192];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf - 1);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    if (n < 0) {
      if (errno == EPIPE || errno == EINTR) continue;
      perror("read");
      return 1;
    }
    buf[n] = 0;
    char *msg = strchr(buf, ';');
    if (!msg) continue;
    msg++;
    char *nl = strchr(msg, '\n');
    if (nl) *nl = 0;
    if (strstr(msg, "fork rejected by pids controller") || strncmp(msg, "oom-kill:", 9) == 0)
      printf("%lld %s\n", (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec, msg);
  }
}
