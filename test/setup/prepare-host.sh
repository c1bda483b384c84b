#!/usr/bin/env bash
# Prepares this machine for `npm test` (run by npm's pretest): the tests run against real
# kernels and programs, so they need root and a few Debian packages. Installs what is missing
# (root on Debian/Ubuntu), or stops with one sentence naming the command to run.
# With everything present it costs one dpkg-query (~50 ms).
set -euo pipefail

# package: why the tests need it
needs=(
  "user-mode-linux:a real cgroup v2 kernel (test/uml)"
  "podman:real containers (test/e2e)"
  "runc:the OCI runtime podman uses here (crun refuses hybrid cgroups)"
  "conmon:podman's container monitor"
  "fuse-overlayfs:podman storage"
  "busybox-static:the test containers' image"
  "docker.io:a private Docker Engine for the real-Docker tests (test/e2e/docker-daemon)"
  "containerd:a private containerd with its CRI plugin, and ctr, for the CRI name tests (test/e2e/cri-containerd)"
  "prometheus:a real Prometheus scraping /metrics, and promtool"
  "prometheus-alertmanager:a real Alertmanager receiving alerts"
  "openssl:a throwaway CA and server certificate for the metrics TLS tests (metrics.webConfigFile)"
  "inotify-tools:cgroup inotify checks"
  "systemd:systemd-analyze on the unit file; PID 1 inside user-mode Linux (test/uml/cri-systemd-v2)"
  "dbus:the system bus runc's systemd cgroup driver and podman's systemd cgroup manager talk to, inside user-mode Linux (test/uml/cri-systemd-v2, systemd-service)"
  "iproute2:loopback inside user-mode Linux"
  "e2fsprogs:chattr, to make a file the daemon cannot write"
  "util-linux:setpriv, to run the daemon as another user"
  "gcc:the native hook client (npm run build, dist/native/cgwatchdog-hook) and the C floor reader the tests compare with"
  "libc6-dev:headers and the static libc for the native hook client and the C floor reader"
  "strace:every program the daemon's process tree runs at start (test/kernel/capabilities: no shell)"
  "patchelf:gives the newer user-mode Linux kernels of the test matrix their own glibc"
)

if [ "$(id -u)" != 0 ]; then
  echo "cgwatchdog's tests create cgroups and change kernel settings, so they must run as root: run 'sudo npm test'." >&2
  exit 1
fi

pkgs=()
for n in "${needs[@]}"; do pkgs+=("${n%%:*}"); done

installed=$(dpkg-query -W -f='${db:Status-Status} ${Package}\n' "${pkgs[@]}" 2>/dev/null | awk '$1=="installed"{print $2}' || true)
missing=()
for n in "${needs[@]}"; do
  p=${n%%:*}
  grep -qx "$p" <<<"$installed" || missing+=("$n")
done
if [ ${#missing[@]} -eq 0 ]; then
  exec "$(dirname "$0")/uml-kernels.sh"
fi

names=()
echo "cgwatchdog tests: installing what they need:"
for n in "${missing[@]}"; do
  echo "  ${n%%:*}: ${n#*:}"
  names+=("${n%%:*}")
done
if ! command -v apt-get >/dev/null 2>&1; then
  echo "cgwatchdog's tests need Debian packages this machine lacks and there is no apt-get: install ${names[*]} with your package manager and run 'npm test' again." >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${names[@]}" >/dev/null
echo "cgwatchdog tests: installed ${names[*]}"
exec "$(dirname "$0")/uml-kernels.sh"
