/*
 * The floor of a 1 s counter sweep: open every pids.events named in the file argv[1] (one
 * path a line) once, keep the fds, then once a second pread(2) each from offset 0 (which
 * makes the kernel regenerate the seq file, as the daemon's reads do) and look for "max ".
 * Nothing else: no parsing beyond that, no allocation in the loop.
 * Output: "ready <n>\n" once every file is open; then it runs until killed.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc != 2) { fprintf(stderr, "usage: sweep-floor <file of paths>\n"); return 2; }
  FILE *f = fopen(argv[1], "r");
  if (!f) { perror(argv[1]); return 1; }
  int cap = 1024, n = 0;
  int *fds = malloc(cap * sizeof *fds);
  char line[4096];
  while (fgets(line, sizeof line, f)) {
    line[strcspn(line, "\n")] = 0;
    if (!line[0]) continue;
    int fd = open(line, O_RDONLY);
    if (fd < 0) { perror(line); return 1; }
    if (n == cap) fds = realloc(fds, (cap *= 2) * sizeof *fds);
    fds[n++] = fd;
  }
  fclose(f);
  setvbuf(stdout, NULL, _IOLBF, 0);
  printf("ready %d\n", n);
  char buf[256];
  long long seen = 0;
  struct timespec next;
  clock_gettime(CLOCK_MONOTONIC, &next);
  for (;;) {
    for (int i = 0; i < n; i++) {
      ssize_t r = pread(fds[i], buf, sizeof buf - 1, 0);
      if (r > 0) { buf[r] = 0; if (strstr(buf, "max ")) seen++; }
    }
    next.tv_sec += 1;
    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
  }
  return (int)(seen & 1);
}
