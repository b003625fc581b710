# Shared functions of the VM tests: image building, qemu control, guest observation.
# Sourced by tests/vm/vm; expects $VM_TOP (repository root) to be set.
# shellcheck shell=bash

VM_DIR=$VM_TOP/tests/vm
VM_CACHE=${VM_CACHE:-$VM_DIR/cache}
VM_RUNS=${VM_RUNS:-$VM_CACHE/runs}
# The kernel the linux-image-amd64 metapackage currently points at (the archive drops
# old ABI versions, so a pinned one would stop downloading one day).
if [ -z "${VM_KVER:-}" ]; then
  VM_KVER=$(apt-cache depends linux-image-amd64 2>/dev/null |
    sed -n 's/^ *Depends: linux-image-\([0-9][^ ]*-amd64\)$/\1/p' | head -n 1)
  VM_KVER=${VM_KVER:-6.1.0-56-amd64}
fi
VM_QEMU_MEM=${VM_QEMU_MEM:-384}
# The try-once GRUB script under test: the one the project ships.
VM_GRUB_SNIPPET=${VM_GRUB_SNIPPET:-$VM_TOP/packaging/grub/patchd-ab.cfg}

# Disk layout (MBR, 512-byte sectors). The first MiB holds GRUB's boot.img and core.img.
SECTOR=512
P1_START=2048;   P1_SIZE=$((16 * 2048))   # boot: ext2, /grub/grub.cfg + grubenv
P2_START=$((P1_START + P1_SIZE)); P2_SIZE=$((160 * 2048)) # root a
P3_START=$((P2_START + P2_SIZE)); P3_SIZE=$((160 * 2048)) # root b
P4_START=$((P3_START + P3_SIZE)); P4_SIZE=$((128 * 2048)) # data: /var/lib/patchd
DISK_SECTORS=$((P4_START + P4_SIZE))

vm_log() { printf '[vm %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
vm_die() { vm_log "error: $*"; exit 1; }

part_start() { local v="P$1_START"; echo "${!v}"; }
part_size() { local v="P$1_SIZE"; echo "${!v}"; }

# --- image building ------------------------------------------------------------------

# Kernel from Debian's linux-image package, unpacked (never installed on the host).
vm_kernel() {
  local kdir=$VM_CACHE/kernel-$VM_KVER
  if [ ! -f "$kdir/.done" ]; then
    vm_log "fetching linux-image-$VM_KVER from the Debian archive"
    rm -rf "$kdir" "$VM_CACHE/deb"
    mkdir -p "$kdir" "$VM_CACHE/deb"
    (cd "$VM_CACHE/deb" && apt-get download "linux-image-$VM_KVER" >/dev/null 2>&1) ||
      vm_die "apt-get download linux-image-$VM_KVER failed"
    dpkg-deb --fsys-tarfile "$VM_CACHE"/deb/linux-image-*.deb | tar -x -C "$kdir" ||
      vm_die "unpacking the kernel package failed"
    depmod -b "$kdir" "$VM_KVER" || vm_die "depmod failed"
    rm -rf "$VM_CACHE/deb"
    touch "$kdir/.done"
  fi
  echo "$kdir"
}

# Initramfs: busybox + the modules needed to reach an ext4 root on virtio-blk.
vm_build_initramfs() {
  local kdir=$1 out=$2 tmp mods
  tmp=$(mktemp -d)
  mkdir -p "$tmp/bin" "$tmp/modules"
  cp /bin/busybox "$tmp/bin/busybox"
  cp "$VM_DIR/guest/initramfs-init" "$tmp/init"
  mods=$(modprobe -d "$kdir" -S "$VM_KVER" --show-depends -a \
    virtio_pci virtio_blk crc32c_generic ext4 virtio_net | awk '$1=="insmod"{print $2}' | awk '!s[$0]++') ||
    vm_die "module dependencies not resolved"
  : >"$tmp/modules/order"
  local m
  for m in $mods; do
    cp "$m" "$tmp/modules/"
    basename "$m" >>"$tmp/modules/order"
  done
  (cd "$tmp" && find . | cpio -o -H newc --quiet | gzip -1) >"$out"
  rm -rf "$tmp"
}

# Root filesystem tree of one release. $2: release name written to /etc/vm-release;
# $3: "good" or "noinit" (no /sbin/init: the kernel panics, a release that never boots).
vm_build_root_tree() {
  local tree=$1 release=$2 kind=$3 kdir=$4 initrd=$5 d b
  rm -rf "$tree"
  for d in bin sbin usr/bin usr/sbin etc proc sys dev run tmp boot boot/grub-part \
    var/lib/patchd var/cache/patchd etc/patchd/health.d root; do
    mkdir -p "$tree/$d"
  done
  cp /bin/busybox "$tree/bin/busybox"
  # Busybox applets as symlinks, as busybox --install would make them.
  for b in $(/bin/busybox --list-full); do
    [ -e "$tree/$b" ] || ln -s /bin/busybox "$tree/$b"
  done
  rm -f "$tree/sbin/init"
  if [ "$kind" = good ]; then
    cp "$VM_DIR/guest/init" "$tree/sbin/init"
    chmod 755 "$tree/sbin/init"
  fi
  cp "$VM_DIR/guest/grubenv.sh" "$tree/etc/grubenv.sh"
  echo "$release" >"$tree/etc/vm-release"
  printf 'root:x:0:0:root:/root:/bin/sh\n' >"$tree/etc/passwd"
  printf 'root:x:0:\n' >"$tree/etc/group"
  cp "$kdir/boot/vmlinuz-$VM_KVER" "$tree/boot/vmlinuz"
  cp "$initrd" "$tree/boot/initrd.img"
  # Our release binaries, when they were built (tests/suites/vm builds them when a
  # scenario needs them).
  for b in patchd patchctl; do
    if [ -x "$VM_TOP/target/release/$b" ]; then
      cp "$VM_TOP/target/release/$b" "$tree/usr/bin/$b"
      strip "$tree/usr/bin/$b" 2>/dev/null || true
    fi
  done
}

# ext4 image of a directory tree, no mounts needed. GRUB 2.06 reads these features.
vm_mkfs() {
  local type=$1 tree=$2 out=$3 sectors=$4 label=$5
  rm -f "$out"
  truncate -s $((sectors * SECTOR)) "$out"
  "mkfs.$type" -q -F -L "$label" -d "$tree" "$out" >/dev/null || vm_die "mkfs.$type $out failed"
}

# GRUB for BIOS without grub-install: core.img with everything built in (so no module
# directory is needed on the boot partition), boot.img's code in the MBR and core.img
# right after it, at sector 1 — the defaults boot.img and diskboot.img carry.
vm_build_grub() {
  local out=$1
  grub-mkimage -O i386-pc -o "$out.core" -p '(hd0,msdos1)/grub' \
    biosdisk part_msdos ext2 normal configfile linux loadenv test echo serial \
    terminal sleep reboot halt gzio cat || vm_die "grub-mkimage failed"
  local core_sectors=$(( ($(stat -c %s "$out.core") + SECTOR - 1) / SECTOR ))
  [ "$core_sectors" -lt "$((P1_START - 1))" ] || vm_die "core.img does not fit before the first partition"
  cp /usr/lib/grub/i386-pc/boot.img "$out.boot"
}

# Builds (or reuses) the cached parts: kernel, initramfs, GRUB, boot partition, root
# images of the releases, empty data partition. Cheap when nothing changed.
vm_build() {
  mkdir -p "$VM_CACHE"
  local kdir key stamp
  kdir=$(vm_kernel)
  [ -f "$VM_GRUB_SNIPPET" ] || vm_die "GRUB snippet $VM_GRUB_SNIPPET missing"
  key=$( { cat "$VM_DIR"/guest/* "$VM_DIR/lib.sh" "$VM_GRUB_SNIPPET"; echo "$VM_KVER";
    for b in patchd patchctl; do
      [ -x "$VM_TOP/target/release/$b" ] && sha256sum "$VM_TOP/target/release/$b"; done; } |
    sha256sum | cut -c1-16)
  stamp=$VM_CACHE/parts/.key
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ]; then
    return 0
  fi
  vm_log "building VM parts (key $key)"
  local p=$VM_CACHE/parts tmp
  rm -rf "$p"; mkdir -p "$p"
  tmp=$(mktemp -d)
  vm_build_initramfs "$kdir" "$p/initrd.img"
  vm_build_grub "$p/grub"
  # Boot partition: the try-once script and a fresh environment block.
  mkdir -p "$tmp/boot/grub"
  cp "$VM_DIR/guest/grub.cfg" "$tmp/boot/grub/grub.cfg"
  cp "$VM_GRUB_SNIPPET" "$tmp/boot/grub/patchd-ab.cfg"
  grub-editenv "$tmp/boot/grub/grubenv" create
  grub-editenv "$tmp/boot/grub/grubenv" set patchd_order=a patchd_a_ok=1
  vm_mkfs ext2 "$tmp/boot" "$p/boot.img" "$P1_SIZE" boot
  local r
  for r in v1:good v2:good v3:good v4:noinit; do
    vm_build_root_tree "$tmp/root" "${r%%:*}" "${r##*:}" "$kdir" "$p/initrd.img"
    # A release's filesystem is its content plus room for the journal, not the whole
    # slot: staging (and its power-cut scenario) then copies and verifies only that.
    local mib=$(( ($(du -sm "$tmp/root" | cut -f1) + 12 + 3) / 4 * 4 ))
    [ "$mib" -le $((P2_SIZE / 2048)) ] || vm_die "root filesystem of ${mib} MiB exceeds the slot"
    vm_mkfs ext4 "$tmp/root" "$p/root-${r%%:*}.img" $((mib * 2048)) "root"
  done
  mkdir -p "$tmp/data/vm"
  vm_mkfs ext4 "$tmp/data" "$p/data.img" "$P4_SIZE" data
  rm -rf "$tmp"
  echo "$key" >"$stamp"
}

# Assembles a disk image: $1 path, $2 release in slot a, $3 release in slot b (or "-").
vm_assemble() {
  local disk=$1 a=$2 b=$3 p=$VM_CACHE/parts
  rm -f "$disk"
  truncate -s $((DISK_SECTORS * SECTOR)) "$disk"
  sfdisk -q "$disk" >/dev/null <<EOF || vm_die "sfdisk failed"
label: dos
start=$P1_START, size=$P1_SIZE, type=83, bootable
start=$P2_START, size=$P2_SIZE, type=83
start=$P3_START, size=$P3_SIZE, type=83
start=$P4_START, size=$P4_SIZE, type=83
EOF
  # boot.img's code only: bytes 440.. hold the disk signature and partition table.
  dd if="$p/grub.boot" of="$disk" bs=440 count=1 conv=notrunc status=none
  dd if="$p/grub.core" of="$disk" bs=$SECTOR seek=1 conv=notrunc status=none
  vm_put_part "$disk" 1 "$p/boot.img" sparse
  vm_put_part "$disk" 2 "$p/root-$a.img" sparse
  if [ "$b" != - ]; then vm_put_part "$disk" 3 "$p/root-$b.img" sparse; fi
  vm_put_part "$disk" 4 "$p/data.img" sparse
}

# vm_put_part DISK N IMAGE [sparse]: "sparse" skips zero blocks, only right on a fresh disk.
vm_put_part() {
  local conv=notrunc
  [ "${4:-}" = sparse ] && conv=notrunc,sparse
  dd if="$3" of="$1" bs=1M oflag=seek_bytes seek=$(( $(part_start "$2") * SECTOR )) \
    conv=$conv status=none || vm_die "writing partition $2 failed"
}

vm_get_part() {
  dd if="$1" of="$3" bs=1M iflag=skip_bytes,count_bytes skip=$(( $(part_start "$2") * SECTOR )) \
    count=$(( $(part_size "$2") * SECTOR )) conv=sparse status=none || vm_die "reading partition $2 failed"
}

# --- observing and changing the guest's disks from the host (qemu stopped) ----------

# vm_cat DISK PART PATH: prints a file of an ext2/4 partition.
vm_cat() {
  local tmp; tmp=$(mktemp)
  vm_get_part "$1" "$2" "$tmp"
  debugfs -R "cat $3" "$tmp" 2>/dev/null
  rm -f "$tmp"
}

# vm_put DISK PART LOCAL PATH: writes a file into an ext2/4 partition (replacing it).
vm_put() {
  local tmp; tmp=$(mktemp)
  vm_get_part "$1" "$2" "$tmp"
  debugfs -w -f - "$tmp" >/dev/null 2>&1 <<EOF
rm $4
write $3 $4
EOF
  debugfs -R "stat $4" "$tmp" >/dev/null 2>&1 || vm_die "could not write $4 on partition $2"
  vm_put_part "$1" "$2" "$tmp"
  rm -f "$tmp"
}

# vm_grubenv DISK ARGS...: runs grub-editenv on the boot partition's grubenv (list/set/unset).
vm_grubenv() {
  local disk=$1; shift
  local tmp; tmp=$(mktemp)
  vm_cat "$disk" 1 /grub/grubenv >"$tmp"
  [ "$(stat -c %s "$tmp")" = 1024 ] || vm_die "grubenv on the boot partition is not 1024 bytes"
  grub-editenv "$tmp" "$@"
  if [ "$1" != list ]; then vm_put "$disk" 1 "$tmp" /grub/grubenv; fi
  rm -f "$tmp"
}

# --- running the guest --------------------------------------------------------------

# vm_start DISK CONSOLE_LOG: starts qemu in the background; VM_PID is its pid.
vm_start() {
  local disk=$1 log=$2
  : >"$log"
  qemu-system-x86_64 -accel tcg -m "$VM_QEMU_MEM" -smp 1 -nodefaults -no-user-config \
    -display none -vga none -serial "file:$log" -monitor none \
    -drive "file=$disk,format=raw,if=virtio,cache=unsafe" \
    -nic none ${VM_QEMU_EXTRA:-} &
  VM_PID=$!
  vm_log "qemu started (pid $VM_PID), console: $log"
}

# Microseconds now, without forking (polling loops run on a loaded machine, where a
# count of sleeps says little about the time passed).
vm_now_us() { echo "${EPOCHREALTIME/./}"; }

# vm_wait_exit TIMEOUT: waits for the guest to power off; kills it after TIMEOUT seconds.
vm_wait_exit() {
  local deadline=$(( $(vm_now_us) + $1 * 1000000 ))
  while kill -0 "$VM_PID" 2>/dev/null; do
    if [ "$(vm_now_us)" -ge "$deadline" ]; then
      vm_log "guest still running after $1s: killing qemu"
      vm_kill
      return 1
    fi
    sleep 0.1
  done
  wait "$VM_PID" 2>/dev/null || true
  return 0
}

# vm_wait_console LOG PATTERN TIMEOUT: waits for an extended regexp on the console.
# TIMEOUT in seconds, or in milliseconds with an "ms" suffix.
vm_wait_console() {
  local log=$1 pat=$2 t=$3 us
  case $t in *ms) us=$(( ${t%ms} * 1000 ));; *) us=$((t * 1000000));; esac
  local deadline=$(( $(vm_now_us) + us ))
  until grep -qE "$pat" "$log" 2>/dev/null; do
    if ! kill -0 "$VM_PID" 2>/dev/null; then return 1; fi
    if [ "$(vm_now_us)" -ge "$deadline" ]; then return 1; fi
    sleep 0.05
  done
}

# Console text without carriage returns and terminal escapes (GRUB clears the screen).
vm_clean() { sed -e 's/\x1b\[[0-9;]*[A-Za-z]//g' -e 's/\r//g'; }

# Hard power-off: what a power cut does to the guest.
vm_kill() {
  kill -KILL "$VM_PID" 2>/dev/null || true
  wait "$VM_PID" 2>/dev/null || true
}
