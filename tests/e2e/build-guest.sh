#!/usr/bin/env bash
# Build the tiny bootable test guest from Debian packages (no download).
#
#   tests/e2e/build-guest.sh [--check] [--check-libvirt]
#
# Output: tests/.cache/guest.qcow2 (cached, keyed on the kernel and busybox
# versions and on this script); its path is the one line on stdout.  The
# guest is a FAT disk with syslinux, the Debian cloud kernel and a busybox
# initramfs whose /init prints
#   STRATUS-GUEST-BOOTED boot=N
# to the serial console (N counts boots, kept on the disk itself), then a
# STRATUS-GUEST-TICK line every 5 s, and powers off on the ACPI power button.
#
# Next to it, tests/.cache/guest-noacpi.qcow2 is the same disk whose
# syslinux.cfg adds stratus.noacpid to the kernel command line: its /init
# reads that from /proc/cmdline, starts no acpid, so the guest ignores the
# power button (a stop waits stop_timeout_s, then pulls the plug), and its
# marker line ends in " acpid=off".
#
# --check          boot it once with qemu-system-x86_64 (TCG) and read the marker
# --check-libvirt  boot it once under qemu:///system and read the marker from
#                  the serial log libvirt writes
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CACHE="$ROOT/tests/.cache"
OUT="$CACHE/guest.qcow2"
OUT_NOACPI="$CACHE/guest-noacpi.qcow2"
NOACPI_ARG=stratus.noacpid
MARKER=STRATUS-GUEST-BOOTED

die() { echo "build-guest: $*" >&2; exit 1; }
log() { echo "build-guest: $*" >&2; }

kernel=$(ls -1 /boot/vmlinuz-*-cloud-amd64 2>/dev/null | sort -V | tail -n1) ||
    true
[ -n "$kernel" ] || die "no /boot/vmlinuz-*-cloud-amd64 (install linux-image-cloud-amd64)"
kver=${kernel#/boot/vmlinuz-}
busybox=/bin/busybox
[ -x "$busybox" ] || die "no $busybox (install busybox-static)"
file -L "$busybox" 2>/dev/null | grep -q 'statically linked' ||
    ldd "$busybox" 2>&1 | grep -q 'not a dynamic' || die "$busybox is not static (install busybox-static)"
bbver=$(dpkg-query -W -f='${Version}' busybox-static 2>/dev/null || echo unknown)
self=$(sha256sum "$0" | cut -c1-16)
key="kernel=$kver busybox=$bbver script=$self"

build() {
    local work mods m f
    work=$(mktemp -d)
    trap 'rm -rf "$work"' RETURN
    mkdir -p "$work"/root/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,mnt,tmp,etc/acpi,lib/modules}
    cp "$busybox" "$work/root/bin/busybox"
    for a in $("$busybox" --list); do
        [ "$a" = busybox ] && continue
        ln -sf busybox "$work/root/bin/$a"
    done

    # Everything this kernel builds as a module that the guest needs: the
    # virtio disk (for the boot counter) and the ACPI power button.
    mods="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci
          virtio_blk fat vfat nls_cp437 nls_ascii button evdev"
    : >"$work/root/lib/modules/order"
    for m in $mods; do
        f=$(modinfo -k "$kver" -F filename "$m" 2>/dev/null) || { log "no module $m"; continue; }
        case "$f" in
        *.ko) cp "$f" "$work/root/lib/modules/$m.ko" ;;
        *.ko.xz) xz -dc "$f" >"$work/root/lib/modules/$m.ko" ;;
        *.ko.zst) zstd -dqc "$f" >"$work/root/lib/modules/$m.ko" ;;
        *) log "module $m is built in"; continue ;;
        esac
        echo "$m" >>"$work/root/lib/modules/order"
    done

    if "$busybox" --list | grep -qx acpid; then
        # busybox acpid turns KEY_POWER from /dev/input/event* into the
        # action PWRF (or PWRB) and runs /etc/acpi/<action>.
        printf 'PWRF PWRF\nPWRB PWRB\n' >"$work/root/etc/acpid.conf"
        for a in PWRF PWRB; do
            printf '#!/bin/sh\necho "STRATUS-GUEST-POWEROFF" >/dev/ttyS0\nsync\numount /mnt 2>/dev/null\npoweroff -f\n' \
                >"$work/root/etc/acpi/$a"
            chmod 755 "$work/root/etc/acpi/$a"
        done
    else
        log "busybox has no acpid applet: the guest will ignore the ACPI power button"
    fi

    cat >"$work/root/init" <<'INIT'
#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || mdev -s
while read -r m; do insmod "/lib/modules/$m.ko" 2>/dev/null; done </lib/modules/order
say() { echo "$*" >/dev/console; echo "$*" >/dev/ttyS0 2>/dev/null; }

# The boot counter lives on the boot disk (FAT): count this boot there.
boot=1
i=0
while [ $i -lt 20 ]; do
    for d in /dev/vda /dev/vda1 /dev/sda /dev/sda1; do
        [ -b "$d" ] && mount -t vfat "$d" /mnt 2>/dev/null && break 2
    done
    i=$((i + 1))
    sleep 0.1
done
if grep -q ' /mnt ' /proc/mounts; then
    n=$(cat /mnt/bootcnt 2>/dev/null)
    case "$n" in ''|*[!0-9]*) n=0 ;; esac
    boot=$((n + 1))
    echo "$boot" >/mnt/bootcnt
    sync
    mount -o remount,ro /mnt
else
    boot=unknown
fi

# acpid first: whoever sees the marker may press the power button at once.
# A kernel command line with stratus.noacpid asks for a guest that ignores it.
acpid=on
case " $(cat /proc/cmdline) " in *" stratus.noacpid "*) acpid=off ;; esac
[ $acpid = on ] && [ -x /bin/acpid ] && [ -f /etc/acpid.conf ] &&
    acpid -c /etc/acpi -a /etc/acpid.conf -l /tmp/acpid.log
if [ $acpid = on ]; then
    say "STRATUS-GUEST-BOOTED boot=$boot"
else
    say "STRATUS-GUEST-BOOTED boot=$boot acpid=off"
fi
t=0
while :; do
    sleep 5
    t=$((t + 5))
    echo "STRATUS-GUEST-TICK boot=$boot t=$t" >/dev/ttyS0 2>/dev/null
done
INIT
    chmod 755 "$work/root/init"
    (cd "$work/root" && find . | cpio -o -H newc --quiet | gzip -9) >"$work/initrd.gz"

    syslinux_cfg "" >"$work/syslinux.cfg"
    syslinux_cfg " $NOACPI_ARG" >"$work/syslinux-noacpi.cfg"

    # A FAT "superfloppy" (no partition table): syslinux's boot sector is
    # the first sector, which the BIOS runs directly.
    truncate -s 48M "$work/disk.img"
    mformat -i "$work/disk.img" -T 98304 -h 64 -s 32 -v STRATUS ::
    mcopy -i "$work/disk.img" "$kernel" ::/vmlinuz
    mcopy -i "$work/disk.img" "$work/initrd.gz" ::/initrd.gz
    mcopy -i "$work/disk.img" "$work/syslinux.cfg" ::/syslinux.cfg
    syslinux --install "$work/disk.img"
    # The variant: the same disk, another kernel command line.
    cp "$work/disk.img" "$work/disk-noacpi.img"
    mcopy -o -i "$work/disk-noacpi.img" "$work/syslinux-noacpi.cfg" ::/syslinux.cfg
    mkdir -p "$CACHE"
    qemu-img convert -q -f raw -O qcow2 "$work/disk.img" "$OUT.tmp"
    qemu-img convert -q -f raw -O qcow2 "$work/disk-noacpi.img" "$OUT_NOACPI.tmp"
    mv "$OUT.tmp" "$OUT"
    mv "$OUT_NOACPI.tmp" "$OUT_NOACPI"
    echo "$key" >"$CACHE/guest.key"
    log "built $OUT and $OUT_NOACPI ($key)"
}

# syslinux.cfg with @1 appended to the kernel command line.
syslinux_cfg() {
    cat <<CFG
SERIAL 0 115200
DEFAULT stratus
PROMPT 0
TIMEOUT 0
LABEL stratus
  KERNEL /vmlinuz
  INITRD /initrd.gz
  APPEND console=tty0 console=ttyS0,115200 panic=-1 quiet loglevel=3$1
CFG
}

# Boot a copy of image @1 with plain QEMU (TCG) and wait for the marker on
# the serial port.
check_qemu() {
    local img=$1 tmp out rc=1
    tmp=$(mktemp -d)
    qemu-img create -q -f qcow2 -F qcow2 -b "$img" "$tmp/d.qcow2"
    timeout 120 qemu-system-x86_64 -machine accel=tcg -m 256 -nographic -no-reboot \
        -drive file="$tmp/d.qcow2",if=virtio,format=qcow2 \
        -serial file:"$tmp/serial.log" -monitor none -display none >/dev/null 2>&1 &
    local pid=$!
    for _ in $(seq 1 120); do
        grep -q "$MARKER" "$tmp/serial.log" 2>/dev/null && { rc=0; break; }
        sleep 1
    done
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    out=$(grep -ao "$MARKER.*" "$tmp/serial.log" 2>/dev/null | head -n1 | tr -d "\r")
    rm -rf "$tmp"
    [ $rc = 0 ] && log "qemu: ${img##*/}: $out" || log "qemu: ${img##*/}: no $MARKER within 120 s"
    return $rc
}

# Boot a copy under libvirt's system daemon and read the serial log it writes.
check_libvirt() {
    local dir name log rc=1
    dir=/var/lib/stratus/guest-check
    name=stratus-guest-check-$$
    mkdir -p "$dir"
    chmod 755 /var/lib/stratus "$dir"
    log="$dir/$name.log"
    rm -f "$log"
    qemu-img create -q -f qcow2 -F qcow2 -b "$OUT" "$dir/$name.qcow2"
    cat >"$dir/$name.xml" <<XML
<domain type='qemu'>
  <name>$name</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='$dir/$name.qcow2'/>
      <backingStore type='file'><format type='qcow2'/><source file='$OUT'/></backingStore>
      <target dev='vda' bus='virtio'/>
    </disk>
    <serial type='pty'><log file='$log' append='on'/><target port='0'/></serial>
    <console type='pty'><target type='serial' port='0'/></console>
  </devices>
</domain>
XML
    virsh -q -c qemu:///system create "$dir/$name.xml" >/dev/null
    for _ in $(seq 1 120); do
        grep -q "$MARKER" "$log" 2>/dev/null && { rc=0; break; }
        sleep 1
    done
    if [ $rc = 0 ]; then
        log "libvirt: $(grep -ao "$MARKER.*" "$log" | head -n1 | tr -d "\r")"
        # The ACPI power button should power the guest off.
        virsh -q -c qemu:///system shutdown "$name" >/dev/null
        for _ in $(seq 1 30); do
            virsh -q -c qemu:///system domstate "$name" >/dev/null 2>&1 || break
            sleep 1
        done
        if virsh -q -c qemu:///system domstate "$name" >/dev/null 2>&1; then
            log "libvirt: guest ignored the ACPI power button"
        else
            log "libvirt: guest powered off on the ACPI power button"
        fi
    else
        log "libvirt: no $MARKER within 120 s (see $log)"
    fi
    virsh -q -c qemu:///system destroy "$name" >/dev/null 2>&1 || true
    rm -f "$dir/$name.qcow2" "$dir/$name.xml" "$log"
    return $rc
}

if [ -f "$OUT" ] && [ -f "$OUT_NOACPI" ] &&
    [ "$(cat "$CACHE/guest.key" 2>/dev/null)" = "$key" ]; then
    :
else
    build
fi
# QEMU runs as libvirt-qemu: it needs to read the images.
chmod 644 "$OUT" "$OUT_NOACPI"

case "${1:-}" in
--check)
    check_qemu "$OUT"
    check_qemu "$OUT_NOACPI"
    ;;
--check-libvirt)
    started=$(mktemp)
    "$ROOT/scripts/services.sh" start "$started"
    rc=0
    check_libvirt || rc=$?
    "$ROOT/scripts/services.sh" stop "$started"
    [ $rc = 0 ]
    ;;
'') ;;
*) die "unknown option $1" ;;
esac
echo "$OUT"
