#!/usr/bin/env bash
# Set-up for the farm on Debian 12, idempotent: the Debian packages it needs (installed with
# apt-get when missing; needs root) and the virtualenv in .venv with the farm installed.
# --kernel X.Y adds Debian's linux-source-X.Y (6.12 is always there; Debian 12 also has 6.1).
# --test adds what only the tests need (headless Chromium for the HTML report, cpio, an
# OpenSSH server that the SSH runner and the host pool are tested against on loopback, and
# the 6.1 source: the tests run both of Debian 12's kernels).
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  linux-source-6.12                                   # the default kernel source
  gcc make libc6-dev flex bison bc libelf-dev libssl-dev patch ccache xz-utils
  qemu-system-x86 busybox-static e2fsprogs            # guests
  bubblewrap util-linux                               # the sandbox for builds and guests
  python3 python3-venv                                # the orchestrator
)
while [ $# -gt 0 ]; do
  case "$1" in
    --test) PACKAGES+=(chromium cpio openssh-server linux-source-6.1) ;;
    --kernel)
      [[ "${2:-}" =~ ^[0-9]+\.[0-9]+$ ]] || { echo "setup: --kernel X.Y, e.g. 6.1" >&2; exit 2; }
      PACKAGES+=("linux-source-$2"); shift ;;
    *) echo "setup: unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing Debian packages: ${missing[*]}; run as root (or sudo) to install them" >&2
    exit 2
  fi
  echo "setup: apt-get install ${missing[*]}" >&2
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The unprivileged user that a root farm builds and boots kernels as (docs/sandbox.md).
if [ "$(id -u)" -eq 0 ] && ! getent passwd hwpoison-build >/dev/null; then
  echo "setup: useradd hwpoison-build (the sandbox's user)" >&2
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
    --user-group hwpoison-build
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.farm-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[test]'
  touch "$stamp"
fi
