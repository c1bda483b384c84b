#!/bin/sh
# PID 1 inside user-mode Linux, started by test/helpers/uml.ts as
#   init=/bin/sh cgwd_out=<host dir> -- <this file>
# A fixed script: it never evaluates text it reads. The host side writes, in the host
# directory named by $cgwd_out (a kernel command-line parameter, which the kernel hands to
# init as an environment variable):
#   argv  one argument per line: node binary, script, then the script's arguments
#   env   optional, one KEY=VALUE per line, exported for the script
# and reads back:
#   setup    facts about the kernel and the cgroup2 mount (key=value lines)
#   exit     the script's exit status
#   results.jsonl, written by the script itself (see test/uml/in-uml.ts)
#
# With cgwd_systemd=1 on the kernel command line (runInUml's `systemd` option) this script
# only prepares PID 1's world (proc, sysfs, /run, the host directory), writes two units into
# /run/systemd/system and execs the host's systemd, booting cgwd-uml.target: basic.target
# and cgwd-uml-test.service, which runs this same file as `init.sh --unit` to run the script
# (cgroup2 is then systemd's, on /sys/fs/cgroup) and power off. The host's default target is
# not booted: it would start the host's own services (containerd, docker, databases).
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH

OUT=/run/out
SELF=$0

finish() {
  sync
  if [ "$1" = unit ]; then
    # A service of systemd: ask PID 1 to kill everything and power off; -ff is reboot(2) itself.
    systemctl poweroff -f >/dev/null 2>&1 || systemctl poweroff -ff >/dev/null 2>&1
    exit 0
  fi
  # halt is systemctl on Debian; with -f it calls reboot(2) directly. If it is not there,
  # PID 1 exiting makes the kernel panic, which ends UML as well.
  halt -f >/dev/null 2>&1 || poweroff -f >/dev/null 2>&1
  exit "${1:-1}"
}

# Build "$@" from the argv file, one line per argument, without eval; export the env file;
# run the script with the cgroup2 mount $1; record its exit status.
run_script() {
  cg=$1
  set --
  while IFS= read -r a || [ -n "$a" ]; do
    set -- "$@" "$a"
  done < "$OUT/argv"
  if [ "$#" -lt 2 ]; then
    echo "CGWD-UML: bad argv file"
    return 1
  fi
  if [ -f "$OUT/env" ]; then
    while IFS= read -r kv || [ -n "$kv" ]; do
      [ -n "$kv" ] && export "$kv"
    done < "$OUT/env"
  fi
  CGWD_UML=1 CGWD_CGROUP_ROOT="$cg" CGWD_OUT="$OUT" HOME=/run "$@" < /dev/null
  rc=$?
  echo "$rc" > "$OUT/exit"
  echo "CGWD-UML: exit=$rc"
}

if [ "$1" = --unit ]; then
  # Started by systemd (cgwd-uml-test.service): the mounts are PID 1's.
  {
    echo "kernel=$(uname -r)"
    echo "init=systemd"
    if ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up 2>/dev/null; then
      echo "loopback=up"
    else
      echo "loopback=down"
    fi
    if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
      echo "cgroup2=1"
      read -r controllers < /sys/fs/cgroup/cgroup.controllers
      echo "controllers=$controllers"
      read -r subtree < /sys/fs/cgroup/cgroup.subtree_control
      echo "subtree_control=$subtree"
    else
      echo "cgroup2=0"
    fi
  } > "$OUT/setup" 2>&1
  run_script /sys/fs/cgroup
  finish unit
fi

mount -t proc proc /proc || finish 1
mount -t sysfs sysfs /sys || finish 1
# The Debian UML kernel mounts devtmpfs on /dev by itself (CONFIG_DEVTMPFS_MOUNT); the host's
# /dev through hostfs would give device nodes the UML kernel does not back. Mount it if absent.
[ -c /dev/null ] || mount -t devtmpfs devtmpfs /dev || finish 1
# tmpfs on /run, NOT on /tmp: /tmp stays the host's /tmp (read-only through the hostfs root).
mount -t tmpfs -o mode=755 tmpfs /run || finish 1
mkdir -p /run/cg "$OUT" || finish 1

if [ -z "$cgwd_out" ] || ! mount -t hostfs -o "$cgwd_out" none "$OUT"; then
  echo "CGWD-UML: cannot mount the host output directory '$cgwd_out'"
  finish 1
fi

if [ "$cgwd_systemd" = 1 ]; then
  if [ ! -x /lib/systemd/systemd ]; then
    echo "CGWD-UML: cgwd_systemd=1 but there is no /lib/systemd/systemd (apt-get install systemd)"
    finish 1
  fi
  mkdir -p /run/systemd/system || finish 1
  cat > /run/systemd/system/cgwd-uml.target <<EOF_TARGET
[Unit]
Description=cgwatchdog UML test boot
Requires=basic.target cgwd-uml-test.service
After=basic.target cgwd-uml-test.service
AllowIsolate=yes
EOF_TARGET
  cat > /run/systemd/system/cgwd-uml-test.service <<EOF_UNIT
[Unit]
Description=cgwatchdog UML test script
After=basic.target
[Service]
Type=oneshot
TimeoutStartSec=infinity
StandardOutput=journal+console
StandardError=journal+console
ExecStart=/bin/sh $SELF --unit
EOF_UNIT
  exec /lib/systemd/systemd systemd.unit=cgwd-uml.target
fi

{
  echo "kernel=$(uname -r)"
  # Loopback, for scripts that talk HTTP to themselves (a webhook receiver for the daemon's
  # alerts). The host root provides ip (iproute2) or ifconfig (net-tools).
  if ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up 2>/dev/null; then
    echo "loopback=up"
  else
    echo "loopback=down"
  fi
  if mount -t cgroup2 none /run/cg; then
    echo "cgroup2=1"
    read -r controllers < /run/cg/cgroup.controllers
    echo "controllers=$controllers"
    # pids and memory are required; cpu and cpuset only when this kernel has them.
    echo "+pids +memory" > /run/cg/cgroup.subtree_control || echo "subtree_error=pids memory"
    for c in $controllers; do
      case "$c" in
        cpu|cpuset) echo "+$c" > /run/cg/cgroup.subtree_control || echo "subtree_error=$c" ;;
      esac
    done
    read -r subtree < /run/cg/cgroup.subtree_control
    echo "subtree_control=$subtree"
  else
    echo "cgroup2=0"
  fi
} > "$OUT/setup" 2>&1

run_script /run/cg || finish 1
finish 0
