#!/usr/bin/env bash
# Install what building and testing mke needs on a fresh Debian machine, idempotently:
# Debian's docker.io engine (started with dockerd when not running), debootstrap for
# the builder image, binutils, and nox. Safe to run again; quick when all is present.
set -euo pipefail

need_apt=()
command -v dockerd >/dev/null 2>&1 || need_apt+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need_apt+=(debootstrap)
command -v objcopy >/dev/null 2>&1 || need_apt+=(binutils)
command -v zstd >/dev/null 2>&1 || need_apt+=(zstd)
command -v file >/dev/null 2>&1 || need_apt+=(file)
# docker mode applies recipes' [[source.patch]] files with git apply (docs/recipes.md).
command -v git >/dev/null 2>&1 || need_apt+=(git)
# mke server tests: real MariaDB and PostgreSQL servers for kine, curl and openssl for checks.
[ -x /usr/sbin/mariadbd ] || need_apt+=(mariadb-server)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need_apt+=(postgresql)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
# FIPS runtime (nox -s tests-fips): build the OpenSSL FIPS provider and cryptography against libcrypto.
[ -f /usr/include/openssl/ssl.h ] || need_apt+=(libssl-dev)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
# mke cluster's e2e test runs a real OpenSSH server in each test host (started by the test, on its own port).
[ -x /usr/sbin/sshd ] || need_apt+=(openssh-server)
# The provider build checks the FIPS module's sources against providers/fips.checksum (make diff-fips-checksums).
command -v unifdef >/dev/null 2>&1 || need_apt+=(unifdef)
# mke completion's zsh and fish scripts are checked by the shells themselves.
command -v zsh >/dev/null 2>&1 || need_apt+=(zsh)
command -v fish >/dev/null 2>&1 || need_apt+=(fish)
if ((${#need_apt[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "bootstrap: need root to install ${need_apt[*]} (run with sudo)" >&2
    exit 1
  fi
  echo "bootstrap: installing ${need_apt[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${need_apt[@]}"
fi

# Start the Docker engine when it is not answering.
if ! docker info >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "bootstrap: Docker engine not running; start it with: sudo dockerd &" >&2
    exit 1
  fi
  echo "bootstrap: starting dockerd (log: /var/log/mke-dockerd.log)" >&2
  # in a session of its own: a daemon must not share the caller's process group (a CI job
  # runner or a supervisor that stops the group when the script's caller ends would stop it)
  setsid nohup dockerd >/var/log/mke-dockerd.log 2>&1 < /dev/null &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || { echo "bootstrap: dockerd did not start; see /var/log/mke-dockerd.log" >&2; exit 1; }
fi

# nox: into python3 itself where its pip may install (pyenv, a venv); a distribution's own
# python3 refuses that (Debian 12, Ubuntu 24.04: externally-managed-environment, PEP 668, and
# no pip at all on a stock install), so there nox goes into a tool venv of its own, linked as
# /usr/local/bin/nox (~/.local/bin/nox for another user).
NOX_VERSION=2026.10.20
if ! command -v nox >/dev/null 2>&1 && ! python3 -m nox --version >/dev/null 2>&1; then
  if ! python3 -m pip install -q "nox==$NOX_VERSION" 2>/dev/null; then
    if [ "$(id -u)" = 0 ]; then
      tools=/opt/mke-tools bindir=/usr/local/bin
    else
      tools="$HOME/.local/share/mke-tools" bindir="$HOME/.local/bin"
    fi
    if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c "import ensurepip" >/dev/null 2>&1; then
      if [ "$(id -u)" != 0 ]; then
        echo "bootstrap: python3 cannot make a venv; install python3-venv (sudo apt-get install python3-venv)" >&2
        exit 1
      fi
      echo "bootstrap: installing python3-venv (for nox's tool venv)" >&2
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-venv
    fi
    echo "bootstrap: installing nox $NOX_VERSION into $tools (python3 $(python3 -c 'import platform; print(platform.python_version())'))" >&2
    # (a venv left by an interrupted run is made again: nox is linked only once it is complete)
    rm -rf "$tools" && python3 -m venv "$tools" && "$tools/bin/python" -m pip install -q "nox==$NOX_VERSION"
    mkdir -p "$bindir" && ln -sf "$tools/bin/nox" "$bindir/nox"
    command -v nox >/dev/null 2>&1 || echo "bootstrap: add $bindir to PATH to run nox" >&2
  fi
fi
nox_version=$(nox --version 2>&1 || python3 -m nox --version 2>&1)
echo "bootstrap: ready (docker $(docker version --format '{{.Server.Version}}'), nox $nox_version)" >&2
