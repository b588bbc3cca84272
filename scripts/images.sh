#!/usr/bin/env bash
# Builds corten's small container images locally from Debian packages, without downloading any
# image (no registry is reachable from these machines), as OCI-layout tarballs that
# `corten images import FILE` and `ctr -n k8s.io images import FILE` (containerd 1.6) take:
#
#   pause.tar    registry.k8s.io/pause:3.10      /pause, built from images/pause/pause.c
#   busybox.tar  docker.io/library/busybox:1.35  busybox-static with a link for every applet
#   nginx.tar    docker.io/library/nginx:1.22    Debian's nginx-light + its libraries + busybox
#   redis.tar    docker.io/library/redis:7.0     Debian's redis-server + redis-cli + busybox
#   guestbook-backend-v1.tar, guestbook-backend-v2.tar
#                localhost/guestbook-backend:v1, :v2
#                the guestbook's backend (examples/guestbook/backend/guestbook.py) on Debian's
#                python3.11 (stdlib pruned, precompiled) + busybox; v2 differs only in
#                GUESTBOOK_VERSION, which it reports in every response
#
# Usage: scripts/images.sh [OUT_DIR]   (default target/images; FORCE=1 rebuilds every image)
# An image whose tarball is newer than all of its inputs is skipped. Each image is one
# uncompressed layer, made deterministically: same inputs, same digests.
# scripts/images-check.sh imports and runs them in a private containerd.
set -euo pipefail
umask 022
export LC_ALL=C
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/target/images}
mkdir -p "$out"
out=$(cd "$out" && pwd)

need=()
for p in busybox-static nginx-light gcc libc6-dev redis-server python3.11; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
[ ${#need[@]} -eq 0 ] || "$root/scripts/deps.sh" "${need[@]}"
busybox=/bin/busybox
nginx=/usr/sbin/nginx
redis=$(readlink -f /usr/bin/redis-server)  # a link to redis-check-rdb, which is redis itself
python=/usr/bin/python3.11
pylib=/usr/lib/python3.11
backend_src=$root/examples/guestbook/backend/guestbook.py
if ldd "$busybox" >/dev/null 2>&1; then
  echo "$busybox is not static: the busybox-static package is needed, not busybox" >&2; exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
path_env=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
common=("$root/scripts/images.sh" "$root/scripts/oci-image.py")
# libs_of FILE...: the shared libraries the files load, the dynamic loader included, as
# absolute paths (ldd's "FILE:" headers skipped).
libs_of() { ldd "$@" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// && $2 ~ /^\(/ {print $1}' | sort -u; }
mapfile -t nginx_libs < <(libs_of "$nginx")
mapfile -t redis_libs < <(libs_of "$redis" /usr/bin/redis-cli)
# Python's standard library without what a server never imports (tests, GUI, build files,
# packaging), and the extension modules that are left with the libraries they load.
py_prune=(test idlelib tkinter turtledemo ensurepip lib2to3 pydoc_data distutils venv unittest
  site-packages dist-packages 'config-3.11*' 'lib-dynload/_test*' 'lib-dynload/_ctypes_test*'
  'lib-dynload/xx*' 'lib-dynload/_curses*' 'lib-dynload/readline*' 'lib-dynload/_dbm*'
  'lib-dynload/nis*' 'lib-dynload/ossaudiodev*' 'lib-dynload/_sqlite3*' 'lib-dynload/_tkinter*')
py_excludes=(--exclude=__pycache__)
for x in "${py_prune[@]}"; do py_excludes+=("--exclude=python3.11/$x"); done
mapfile -t py_modules < <(tar -C /usr/lib "${py_excludes[@]}" -cf - python3.11/lib-dynload |
  tar -tf - | grep '\.so$' | sed 's|^|/usr/lib/|')
mapfile -t python_libs < <(libs_of "$python" "${py_modules[@]}")

# fresh TARBALL INPUT...: the tarball exists and is newer than every input.
fresh() {
  local t=$1; shift
  [ -z "${FORCE:-}" ] && [ -f "$t" ] || return 1
  for i in "$@"; do [ "$t" -nt "$i" ] || return 1; done
}

# pack ROOTFS LAYER: a deterministic layer tarball (sorted, mtime 0, owned by 0:0).
pack() {
  local entries
  mapfile -t entries < <(ls -A "$1")
  tar -C "$1" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=gnu \
    -cf "$2" -- "${entries[@]}"
}

# build FILE NAME ROOTFS [oci-image.py options]: pack ROOTFS and write OUT/FILE.
build() {
  local file=$1 name=$2 rootfs=$3; shift 3
  pack "$rootfs" "$tmp/$file.layer"
  python3 "$root/scripts/oci-image.py" --layer "$tmp/$file.layer" --name "$name" \
    --out "$out/$file" "$@" >/dev/null
  rm -f "$tmp/$file.layer"
}

# image FILE NAME INPUT... -- COMMAND...: runs COMMAND (which writes OUT/FILE) unless OUT/FILE is
# fresh; prints one line either way.
image() {
  local file=$1 name=$2; shift 2
  local inputs=("${common[@]}")
  while [ "$1" != -- ]; do inputs+=("$1"); shift; done; shift
  if fresh "$out/$file" "${inputs[@]}"; then
    printf '==> %-24s %-34s up to date (%s)\n' "$file" "$name" "$(du -h "$out/$file" | cut -f1)"
    return
  fi
  local t0=${EPOCHREALTIME/./} ms
  "$@"
  ms=$(( (${EPOCHREALTIME/./} - t0) / 1000 ))
  printf '==> %-24s %-34s built %s in %d.%02ds\n' "$file" "$name" \
    "$(du -h "$out/$file" | cut -f1)" $((ms / 1000)) $((ms % 1000 / 10))
}

# busybox_rootfs DIR: busybox with a link per applet, users, and the usual directories.
busybox_rootfs() {
  local d=$1 path app
  mkdir -p "$d"/{bin,sbin,usr/bin,usr/sbin,usr/local/bin,etc,root,home,var/spool,var/tmp,tmp,proc,sys,dev,run}
  chmod 1777 "$d/tmp" "$d/var/tmp"
  chmod 0700 "$d/root"
  install -m 0755 "$busybox" "$d/bin/busybox"
  # What `busybox --install -s` would do, offline: every applet in /bin (as the official image
  # has them), and in its own place (usr/bin/env, sbin/ifconfig, ...) when that differs.
  while read -r path; do
    case $path in */*) ;; *) continue ;; esac  # linuxrc
    app=${path##*/}
    [ "$app" != busybox ] || continue
    [ -L "$d/bin/$app" ] || ln -s busybox "$d/bin/$app"
    case $path in
      bin/*) ;;
      *) [ -L "$d/$path" ] || ln -s /bin/busybox "$d/$path" ;;
    esac
  done < <("$busybox" --list-full)
  printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' \
    >"$d/etc/passwd"
  printf '%s\n' 'root:x:0:' 'nobody:x:65534:' >"$d/etc/group"
  # Placeholders that the runtime bind-mounts over.
  : >"$d/etc/hostname"; : >"$d/etc/hosts"; : >"$d/etc/resolv.conf"
}

make_pause() {
  local d=$tmp/pause
  mkdir -p "$d"
  gcc -static -Os -s -Wall -Wextra -o "$d/pause" "$root/images/pause/pause.c"
  build pause.tar registry.k8s.io/pause:3.10 "$d" \
    --env "$path_env" --entrypoint '["/pause"]' --workdir /
}

make_busybox() {
  local d=$tmp/busybox
  busybox_rootfs "$d"
  build busybox.tar docker.io/library/busybox:1.35 "$d" \
    --env "$path_env" --cmd '["sh"]' --workdir /
}

make_nginx() {
  local d=$tmp/nginx lib f
  busybox_rootfs "$d"
  install -D -m 0755 "$nginx" "$d/usr/sbin/nginx"
  for lib in "${nginx_libs[@]}"; do  # the file's contents, under the path ldd shows
    install -D -m 0755 "$(readlink -f "$lib")" "$d$lib"
  done
  mkdir -p "$d/etc/nginx/conf.d" "$d/usr/share/nginx/html" "$d/var/log/nginx" \
    "$d/var/lib/nginx" "$d/var/cache/nginx" "$d/var/www"
  install -m 0644 "$root/images/nginx/nginx.conf" "$d/etc/nginx/nginx.conf"
  install -m 0644 "$root/images/nginx/default.conf" "$d/etc/nginx/conf.d/default.conf"
  for f in mime.types fastcgi_params fastcgi.conf scgi_params uwsgi_params; do
    install -m 0644 "/etc/nginx/$f" "$d/etc/nginx/$f"
  done
  install -m 0644 "$root/images/nginx/index.html" "$root/images/nginx/50x.html" "$d/usr/share/nginx/html/"
  ln -s /dev/stdout "$d/var/log/nginx/access.log"  # as the official image: logs to the container's
  ln -s /dev/stderr "$d/var/log/nginx/error.log"   # stdout and stderr
  ln -s /run "$d/var/run"
  printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' \
    'www-data:x:33:33:www-data:/var/www:/bin/false' \
    'nginx:x:101:101:nginx user:/nonexistent:/bin/false' \
    'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' >"$d/etc/passwd"
  printf '%s\n' 'root:x:0:' 'www-data:x:33:' 'nginx:x:101:' 'nogroup:x:65534:' >"$d/etc/group"
  printf '%s\n' 'passwd: files' 'group: files' 'shadow: files' 'hosts: files dns' >"$d/etc/nsswitch.conf"
  build nginx.tar docker.io/library/nginx:1.22 "$d" \
    --env "$path_env" --cmd '["nginx", "-g", "daemon off;"]' --workdir / \
    --expose 80/tcp --stop-signal SIGQUIT
}

make_redis() {
  local d=$tmp/redis lib
  busybox_rootfs "$d"
  install -D -m 0755 "$redis" "$d/usr/bin/redis-server"
  install -D -m 0755 /usr/bin/redis-cli "$d/usr/bin/redis-cli"
  for lib in "${redis_libs[@]}"; do install -D -m 0755 "$(readlink -f "$lib")" "$d$lib"; done
  mkdir -p "$d/data"
  build redis.tar docker.io/library/redis:7.0 "$d" \
    --env "$path_env" --cmd '["redis-server"]' --workdir /data --expose 6379/tcp
}

# The backend's root filesystem, made once for both tags: busybox, python3.11 with its pruned
# standard library compiled ahead of time (unchecked-hash .pyc files: valid whatever the
# files' mtimes, and the container's user could not write them), the app in /app.
backend_rootfs() {
  local d=$tmp/backend lib
  [ ! -d "$d" ] || return 0
  busybox_rootfs "$d"
  install -D -m 0755 "$python" "$d/usr/bin/python3.11"
  ln -s python3.11 "$d/usr/bin/python3"
  mkdir -p "$d/usr/lib"
  tar -C /usr/lib "${py_excludes[@]}" -cf - python3.11 | tar -C "$d/usr/lib" -xf -
  for lib in "${python_libs[@]}"; do install -D -m 0755 "$(readlink -f "$lib")" "$d$lib"; done
  PYTHONHASHSEED=0 "$python" -m compileall -q -j0 --invalidation-mode unchecked-hash \
    -s "$d" -p / "$d/usr/lib/python3.11" >/dev/null
  install -D -m 0644 "$backend_src" "$d/app/guestbook.py"
  printf '%s\n' 'guestbook:x:10001:10001:guestbook:/app:/bin/false' >>"$d/etc/passwd"
  printf '%s\n' 'guestbook:x:10001:' >>"$d/etc/group"
}

make_backend() {
  local version=$1
  backend_rootfs
  build "guestbook-backend-$version.tar" "localhost/guestbook-backend:$version" "$tmp/backend" \
    --env "$path_env" --env "GUESTBOOK_VERSION=$version" --env PYTHONDONTWRITEBYTECODE=1 \
    --entrypoint '["python3", "/app/guestbook.py"]' --workdir /app --user 10001:10001 \
    --expose 8080/tcp
}

image pause.tar registry.k8s.io/pause:3.10 "$root/images/pause/pause.c" -- make_pause
image busybox.tar docker.io/library/busybox:1.35 "$busybox" -- make_busybox
image nginx.tar docker.io/library/nginx:1.22 "$busybox" "$nginx" "${nginx_libs[@]}" \
  "$root"/images/nginx/* /etc/nginx/mime.types -- make_nginx
image redis.tar docker.io/library/redis:7.0 "$busybox" "$redis" /usr/bin/redis-cli \
  "${redis_libs[@]}" -- make_redis
for v in v1 v2; do
  image "guestbook-backend-$v.tar" "localhost/guestbook-backend:$v" "$busybox" "$python" "$pylib" \
    "${python_libs[@]}" "$backend_src" -- make_backend "$v"
done
echo "==> images in $out"
