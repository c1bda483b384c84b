#!/bin/bash
# The extra real kernels of the test matrix: user-mode Linux from Debian trixie (6.12, the
# 6.11 pids semantics) and sid (the newest), beside bookworm's 6.1 (the user-mode-linux
# package). Each is cached in /var/cache/cgwd-uml-<suite>/linux.uml with its suite's glibc
# (patchelf gives it its own loader: ../shared/docs/host-notes.md, "A kernel matrix").
# Present: nothing to do. Missing: downloaded once, saying so. A failed download stops with
# one sentence naming the suite.
set -u
for suite in trixie sid; do
  c=/var/cache/cgwd-uml-$suite
  [ -x "$c/linux.uml" ] && [ -f "$c/version" ] && continue
  echo "prepare-host: fetching the $suite user-mode Linux kernel into $c (the kernel matrix of test/uml)" >&2
  rm -rf "$c" && mkdir -p "$c/lists" "$c/root" "$c/debs" || exit 1
  echo "deb http://deb.debian.org/debian $suite main" > "$c/sources.list"
  o=(-o "Dir::Etc::SourceList=$c/sources.list" -o Dir::Etc::SourceParts=- -o "Dir::State::Lists=$c/lists" -o "Dir::Cache::archives=$c/debs")
  if ! (apt-get "${o[@]}" update -qq && cd "$c/debs" && apt-get "${o[@]}" download user-mode-linux libc6) >"$c/fetch.log" 2>&1; then
    echo "prepare-host: cannot download the $suite user-mode Linux kernel (see $c/fetch.log); the kernel-matrix tests need it." >&2
    exit 1
  fi
  for d in "$c"/debs/*.deb; do dpkg -x "$d" "$c/root" || exit 1; done
  cp "$c/root/usr/bin/linux.uml" "$c/linux.uml.tmp" || exit 1
  patchelf --set-interpreter "$c/root/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" \
           --set-rpath "$c/root/usr/lib/x86_64-linux-gnu" "$c/linux.uml.tmp" || exit 1
  ls "$c/root/usr/lib/uml/modules" 2>/dev/null | head -1 > "$c/version"
  mv "$c/linux.uml.tmp" "$c/linux.uml"
  rm -rf "$c/debs" "$c/lists"
done
