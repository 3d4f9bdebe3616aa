#!/bin/sh
# cmake --install of the C API (the lib/ directory of the build tree: libplh.so, plh.h,
# plh.pc) into a fresh prefix, and with DESTDIR: plh.pc points into that prefix, and a C
# program compiles and links against it with pkg-config's flags only, then runs.
# Usage: check_pkgconfig.sh BUILD_DIR/lib CC
set -eu
build="$1"
cc="${2:-cc}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
prefix="$tmp/prefix"
cmake --install "$build" --prefix "$prefix" >/dev/null
pc=$(find "$prefix" -name plh.pc | head -1)
[ -n "$pc" ] || { echo "no plh.pc under $prefix" >&2; exit 1; }
export PKG_CONFIG_PATH="$(dirname "$pc")"
cflags=$(pkg-config --cflags plh)
libs=$(pkg-config --libs plh)
incdir=$(pkg-config --variable=includedir plh)
libdir=$(pkg-config --variable=libdir plh)
case "$incdir" in "$prefix"/*) ;; *) echo "includedir '$incdir' is not under $prefix" >&2; exit 1 ;; esac
case "$libdir" in "$prefix"/*) ;; *) echo "libdir '$libdir' is not under $prefix" >&2; exit 1 ;; esac
[ -f "$incdir/plh/plh.h" ] || { echo "$incdir/plh/plh.h missing" >&2; exit 1; }
[ -e "$libdir/libplh.so" ] || { echo "$libdir/libplh.so missing" >&2; exit 1; }
cat > "$tmp/main.c" <<'C'
#include <plh/plh.h>
#include <stdio.h>
#include <string.h>
int main(void) {
  plh_shm_reader* r = NULL;
  int rc = plh_shm_reader_open(&r, "no-such-segment-pkgconfig", NULL);
  printf("%s %d\n", plh_version(), rc);
  return rc == PLH_NOT_FOUND && strlen(plh_last_error()) > 0 ? 0 : 1;
}
C
# shellcheck disable=SC2086
"$cc" -std=c11 -Wall -Werror $cflags "$tmp/main.c" -o "$tmp/main" $libs
LD_LIBRARY_PATH="$libdir" "$tmp/main"
# DESTDIR staging: the files land under DESTDIR, plh.pc names the prefix without it.
DESTDIR="$tmp/stage" cmake --install "$build" --prefix /opt/plh-test >/dev/null
spc=$(find "$tmp/stage" -name plh.pc | head -1)
grep -qx 'prefix=/opt/plh-test' "$spc" || { echo "staged plh.pc: $(grep prefix= "$spc")" >&2; exit 1; }
echo "plh.pc: $cflags $libs"
