#!/usr/bin/env bash
# Build the root filesystem of the offline base image (harness-base:bookworm) as a tar file.
#
#   images/base/build-base.sh OUT.tar [SUITE] [MIRROR] [PACKAGES]
#
# A minimal Debian rootfs (debootstrap --variant=minbase) with PACKAGES (comma separated; default
# python3,python3-venv: python 3.11 and a venv whose ensurepip gives pip), made only from Debian packages, so no image registry is needed. Importing
# the tar into Docker (with labels) is done by harness/images.py (`python -m harness.images build base`);
# run this script by hand only to inspect the rootfs. Needs root and debootstrap.
# Writes OUT.tar and OUT.tar.env (KEY=value lines: PYTHON_VERSION, DEBIAN_VERSION, SUITE, MIRROR).
set -euo pipefail

out=${1:?usage: build-base.sh OUT.tar [SUITE] [MIRROR] [PACKAGES]}
suite=${2:-bookworm}
mirror=${3:-http://deb.debian.org/debian}
packages=${4:-python3,python3-venv}

if [[ $(id -u) -ne 0 ]]; then
    echo "build-base.sh: must run as root (debootstrap and chroot need it)" >&2
    exit 2
fi
if ! command -v debootstrap >/dev/null; then
    echo "build-base.sh: debootstrap not installed: apt-get install -y debootstrap" >&2
    exit 2
fi

work=$(mktemp -d /var/tmp/harness-base.XXXXXX)
root=$work/rootfs
cleanup() {
    # debootstrap mounts proc/sys inside the target; a failed run can leave them mounted.
    local m
    for m in $(awk -v r="$root" '$2 ~ "^"r {print $2}' /proc/mounts | sort -r); do
        umount -l "$m" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

echo "build-base.sh: debootstrap --variant=minbase $suite from $mirror (+ $packages)"
debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$mirror" \
    >"$work/debootstrap.log" 2>&1 || {
    echo "build-base.sh: debootstrap failed; last lines of its log:" >&2
    tail -n 30 "$work/debootstrap.log" >&2
    exit 1
}

python_version=$(chroot "$root" python3 -c 'import platform; print(platform.python_version())')
debian_version=$(cat "$root/etc/debian_version")

# Trim what a container never needs: package caches and lists, docs, man pages, locales, logs.
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/* "$root"/var/log/* \
       "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
       "$root"/usr/share/locale/* "$root"/usr/share/lintian "$root"/tmp/* "$root"/var/tmp/* \
       "$root"/dev/* "$root"/proc/* "$root"/sys/* "$root"/run/*
find "$root"/usr/lib/python3* -name __pycache__ -type d -prune -exec rm -rf {} +
# Docker writes these at container start.
: >"$root/etc/hostname"
: >"$root/etc/resolv.conf"

mkdir -p "$(dirname "$out")"
tar --numeric-owner --xattrs --sort=name -C "$root" -cf "$out.tmp" .
mv "$out.tmp" "$out"
cat >"$out.env" <<ENV
PYTHON_VERSION=$python_version
DEBIAN_VERSION=$debian_version
SUITE=$suite
MIRROR=$mirror
ENV
echo "build-base.sh: wrote $out ($(du -h "$out" | cut -f1)), python $python_version, debian $debian_version"
