/*
 * The trigger for PID-limit hits. Put this process alone in a cgroup whose pids.max is 1; for
 * each line read on stdin it takes CLOCK_MONOTONIC and forks once. The fork fails (EAGAIN):
 * that is the kernel event. It prints "<ns before fork> <errno, 0 if the fork succeeded>".
 */
#include <errno.h>
#include <stdio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(void) {
  char line[64];
  setvbuf(stdout, NULL, _IOLBF, 0);
  printf("ready %d\n", (int)getpid());
  while (fgets(line, sizeof line, stdin)) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    pid_t pid = fork();
    int err = pid < 0 ? errno : 0;
    if (pid == 0) _exit(0);
    if (pid > 0) waitpid(pid, NULL, 0);
    printf("%lld %d\n", (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec, err);
  }
  return 0;
}
