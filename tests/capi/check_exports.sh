#!/bin/sh
# libplh.so: a SONAME, and only plh_* symbols exported (nm -D).
set -eu
lib="$1"
soname=$(readelf -d "$lib" | sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p')
[ "$soname" = "libplh.so.0" ] || { echo "SONAME is '$soname', want libplh.so.0" >&2; exit 1; }
all=$(nm -D --defined-only "$lib" | awk '{print $3}' | sed 's/@.*//')
echo "$all" | grep -q '^plh_shm_writer_open$' || { echo "plh_shm_writer_open not exported" >&2; exit 1; }
other=$(echo "$all" | grep -v '^plh_' | grep -v '^PLH_0$' || true)
if [ -n "$other" ]; then
  echo "libplh.so exports symbols other than plh_*:" >&2
  echo "$other" | head -20 >&2
  exit 1
fi
echo "exports: $(echo "$all" | grep -c '^plh_') plh_* symbols, nothing else"
