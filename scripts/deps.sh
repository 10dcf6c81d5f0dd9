#!/usr/bin/env bash
# Installs what building and running vodfarm needs on Debian (bookworm):
# a C toolchain (ring), pkg-config, Debian's FFmpeg 5.1 libraries
# (ffmpeg-next links them dynamically; bindgen needs libclang), the ffmpeg
# CLI, NVENC/NVDEC headers, and the PostgreSQL and Redis servers that
# `vodfarm dev` runs privately. Only what is missing is installed.
set -euo pipefail

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=0
apt_install() {
  if [ $apt_updated = 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# ensure COMMAND PACKAGE: install PACKAGE when COMMAND is missing.
ensure() {
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "deps: installing $2 (for $1)"
  apt_install "$2"
}

# ensure_pkg PACKAGE...: install Debian packages that are not installed
# (libraries have no command to look for).
ensure_pkg() {
  local missing=()
  for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "deps: installing ${missing[*]}"
  apt_install "${missing[@]}"
}

ensure cc build-essential
ensure pkg-config pkg-config
# Debian's postgresql-15 also ships the contrib extensions search needs
# (unaccent, pg_trgm); postgresql-contrib names them explicitly.
ensure pg_ctlcluster postgresql
ensure_pkg postgresql-contrib
ensure psql postgresql-client
ensure redis-server redis-server
ensure_pkg libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libswresample-dev \
  libavfilter-dev libavdevice-dev libclang-dev clang ffmpeg libffmpeg-nvenc-dev
