/*
 * The floor for inotify on cgroup event files (cgroup v2): inotify_add_watch(IN_MODIFY) on
 * each file named on the command line, then a blocking read(2) on the inotify fd; for each
 * event print the CLOCK_MONOTONIC time it was read (ns) and the index of the file. It only
 * waits: it does not even read the file that changed.
 * Output: "ready\n", then "<ns> <index>\n" per event, line-buffered.
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/inotify.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
  int fd = inotify_init1(0);
  if (fd < 0) { perror("inotify_init1"); return 1; }
  int *wd = calloc(argc, sizeof *wd);
  for (int i = 1; i < argc; i++) {
    wd[i] = inotify_add_watch(fd, argv[i], IN_MODIFY);
    if (wd[i] < 0) { perror(argv[i]); return 1; }
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  printf("ready\n");
  char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    if (n <= 0) { perror("read"); return 1; }
    long long ns = (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
    for (char *p = buf; p < buf + n;) {
      struct inotify_event *ev = (struct inotify_event *)p;
      for (int i = 1; i < argc; i++)
        if (wd[i] == ev->wd) printf("%lld %d\n", ns, i - 1);
      p += sizeof *ev + ev->len;
    }
  }
}
