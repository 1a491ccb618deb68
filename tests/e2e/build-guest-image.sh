#!/usr/bin/env bash
# Builds a tiny Linux guest for QEMU tests: Debian's 6.1 kernel (fetched with
# `apt-get download` and unpacked with `dpkg -x`, nothing installed) and a
# busybox initramfs that loads the virtio-net stack, configures eth0 from the
# kernel command line and gives a shell on the serial console.
#
#   tests/e2e/build-guest-image.sh [cache-dir]     (default /var/cache/xvio-test)
# Prints two lines: KERNEL=<path> and INITRD=<path>. Idempotent: reuses what
# the cache already holds. Guest command line knobs (read by /init):
#   xvio_ip=<addr/len>   IPv4 address for eth0 (none: eth0 stays down)
#   xvio_mtu=<bytes>     MTU for eth0
# /init prints XVIO_GUEST_READY on the console when the shell starts.
set -euo pipefail
cache=${1:-/var/cache/xvio-test}
mkdir -p "$cache"
cd "$cache"

deb=$(ls linux-image-6.1.0-*-amd64_*.deb 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$deb" ]; then
  find_kernel_package() {
    apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64$' | awk '{print $1}' |
      sort -V | tail -1
  }
  package=$(find_kernel_package)
  if [ -z "$package" ]; then
    # A machine whose package lists were never fetched (or were cleaned).
    apt-get update -qq >&2
    package=$(find_kernel_package)
  fi
  [ -n "$package" ] || { echo "no linux-image-6.1.0-*-amd64 package known to apt" >&2; exit 1; }
  apt-get download "$package" >&2
  deb=$(ls linux-image-6.1.0-*-amd64_*.deb | sort -V | tail -1)
fi
root="$cache/${deb%.deb}"
if [ ! -d "$root/boot" ]; then
  rm -rf "$root.tmp"
  dpkg -x "$deb" "$root.tmp"
  mv "$root.tmp" "$root"
fi
kernel=$(ls "$root"/boot/vmlinuz-* | head -1)
version=${kernel##*/vmlinuz-}
modules="$root/lib/modules/$version/kernel"

busybox=$(command -v busybox)
initrd="$cache/xvio-guest-$version.cpio.gz"
init_script=$(cat <<'INIT'
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /tmp /dev/pts
for module in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci \
              failover net_failover virtio_net; do
  insmod /lib/modules/$module.ko || echo "insmod $module failed"
done
ip link set lo up
address=$(sed -n 's/.*xvio_ip=\([^ ]*\).*/\1/p' /proc/cmdline)
mtu=$(sed -n 's/.*xvio_mtu=\([^ ]*\).*/\1/p' /proc/cmdline)
if [ -n "$address" ]; then
  [ -n "$mtu" ] && ip link set eth0 mtu "$mtu"
  ip addr add "$address" dev eth0
  ip link set eth0 up
fi
echo XVIO_GUEST_READY
exec setsid cttyhack sh
INIT
)
stamp="$cache/.initrd-$version.stamp"
want="$(sha256sum "$busybox" | cut -d' ' -f1) $(echo "$init_script" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$initrd" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  staging=$(mktemp -d)
  trap 'rm -rf "$staging"' EXIT
  mkdir -p "$staging"/{bin,sbin,proc,sys,dev,tmp,lib/modules,www}
  cp "$busybox" "$staging/bin/busybox"
  for applet in $("$busybox" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$staging/bin/$applet"
  done
  for module in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci \
                failover net_failover virtio_net; do
    file=$(find "$modules" -name "$module.ko" | head -1)
    [ -n "$file" ] || { echo "module $module not found in $modules" >&2; exit 1; }
    cp "$file" "$staging/lib/modules/"
  done
  echo "$init_script" > "$staging/init"
  chmod +x "$staging/init"
  # busybox cpio: Debian does not install GNU cpio by default.
  (cd "$staging" && find . | "$busybox" cpio -o -H newc 2>/dev/null | gzip -1) > "$initrd.tmp"
  mv "$initrd.tmp" "$initrd"
  echo "$want" > "$stamp"
fi
echo "KERNEL=$kernel"
echo "INITRD=$initrd"
