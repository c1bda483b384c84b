#!/usr/bin/env bash
# Builds the base image of deploy/container/Containerfile from this machine's own `node`: a
# root file system with nothing but the node binary (at /usr/local/bin/node, where the official
# node images have it), `cat` (the daemon follows /dev/kmsg through a `cat` child; without one
# it falls back to polling), the shared libraries `ldd` says they load, the dynamic loader, and
# a minimal /etc. No registry is needed; the image is as trustworthy as the build machine's.
#
#   deploy/container/build-base.sh [IMAGE]        default IMAGE: localhost/cgwatchdog-node-base:20
#
# Environment: NODE (default: the node on PATH), CONTAINER_CLI (default: podman; docker works).
# test/e2e/kubernetes-image.test.ts runs this script.
set -euo pipefail

image=${1:-localhost/cgwatchdog-node-base:20}
node=$(readlink -f "${NODE:-$(command -v node)}")
cat_bin=$(readlink -f "$(command -v cat)")
cli=${CONTAINER_CLI:-podman}

work=$(mktemp -d "${TMPDIR:-/tmp}/cgwatchdog-base-XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
mkdir -p "$root"/{usr/local/bin,usr/bin,etc,tmp,root,proc,sys,dev,run}
chmod 1777 "$root/tmp"
chmod 0700 "$root/root"
cp "$node" "$root/usr/local/bin/node"
cp "$cat_bin" "$root/usr/bin/cat"
chmod 0755 "$root/usr/local/bin/node" "$root/usr/bin/cat"

# ldd prints "name => /path (addr)" per library and "/path (addr)" for the loader; the vdso
# has no path. Each file goes to the same path in the image: the ELF names the loader by
# path, and with no ld.so.cache the loader searches its built-in directories, which include
# the multiarch /lib/<triplet> that Debian's ldd prints.
copy_libs() {
  local found=0 lib
  while read -r lib; do
    mkdir -p "$root$(dirname "$lib")"
    [ -e "$root$lib" ] || cp -L "$lib" "$root$lib"
    found=$((found + 1))
  done < <(ldd "$1" | sed -n -e 's/.*=> \(\/[^ ]*\) .*/\1/p' -e 's/^[[:space:]]*\(\/[^ ]*\) .*/\1/p')
  if [ "$found" -eq 0 ] && ! ldd "$1" 2>&1 | grep -q 'not a dynamic executable'; then
    echo "build-base.sh: ldd listed no libraries for $1" >&2
    exit 1
  fi
}
copy_libs "$node"
copy_libs "$cat_bin"

printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
printf '127.0.0.1 localhost\n::1 localhost\n' >"$root/etc/hosts"

"$root/usr/local/bin/node" --version >/dev/null
# PATH: the daemon runs `cat` by name.
tar -C "$root" --numeric-owner --owner=0 --group=0 -cf "$work/rootfs.tar" .
"$cli" import --quiet --change 'ENV PATH=/usr/local/bin:/usr/bin' "$work/rootfs.tar" "$image" >/dev/null
echo "$image"
