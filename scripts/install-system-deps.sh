#!/usr/bin/env bash
# System packages the browser tests need: Debian's chromium (never a browser downloaded by a
# test tool) and the EGL/Mesa libraries trame-slicer renders with. Debian/Ubuntu only; on
# other systems (or without root) this prints what is missing and the browser tests skip.
set -u
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
for lib in libEGL.so.1 libEGL_mesa.so.0; do
  ldconfig -p 2>/dev/null | grep -q "$lib" || { need+=(libegl1 libegl-mesa0 libgl1-mesa-dri); break; }
done
[ -e /usr/lib/x86_64-linux-gnu/dri ] || [ -e /usr/lib/aarch64-linux-gnu/dri ] || need+=(libgl1-mesa-dri)
if [ ${#need[@]} -eq 0 ]; then
  echo "system packages for the browser tests: present"
  exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing system packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null && apt-get install -y -qq "${need[@]}" >/dev/null \
    || echo "could not install ${need[*]}; the browser tests will be skipped"
else
  echo "missing system packages (${need[*]}): install them with apt as root; the browser tests will be skipped"
fi
exit 0
