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
# The slots fit the systemd-based release (a minimal Debian); the busybox releases use a
# fraction (a filesystem is sized to its content, and the disk image is sparse).
P2_START=$((P1_START + P1_SIZE)); P2_SIZE=$((320 * 2048)) # root a
P3_START=$((P2_START + P2_SIZE)); P3_SIZE=$((320 * 2048)) # root b
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

# Initramfs: busybox + the modules needed to reach an ext4 root on virtio-blk, plus the
# modules named in $3 (e.g. btrfs for the apt guest).
vm_build_initramfs() {
  local kdir=$1 out=$2 extra=${3:-} tmp mods
  tmp=$(mktemp -d)
  mkdir -p "$tmp/bin" "$tmp/modules"
  cp /bin/busybox "$tmp/bin/busybox"
  cp "$VM_DIR/guest/initramfs-init" "$tmp/init"
  mods=$(modprobe -d "$kdir" -S "$VM_KVER" --show-depends -a \
    virtio_pci virtio_blk crc32c_generic ext4 virtio_net $extra | awk '$1=="insmod"{print $2}' | awk '!s[$0]++') ||
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
  # scenario needs them), with the C libraries they link and a dbus-daemon for them.
  if [ -x "$VM_TOP/target/release/patchd" ] && [ -x "$VM_TOP/target/release/patchctl" ]; then
    for b in patchd patchctl; do
      cp "$VM_TOP/target/release/$b" "$tree/usr/bin/$b"
      strip "$tree/usr/bin/$b" 2>/dev/null || true
      vm_copy_libs "$tree" "$tree/usr/bin/$b"
    done
    vm_patchd_files "$tree" "$release"
  fi
}

# vm_copy_libs TREE ELF: the shared libraries ELF needs (as ldd resolves them on this
# Debian host, i.e. from its packages), copied into TREE at the same paths.
vm_copy_libs() {
  local tree=$1 elf=$2 lib
  for lib in $(ldd "$elf" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }'); do
    [ -e "$tree$lib" ] && continue
    mkdir -p "$tree$(dirname "$lib")"
    cp -L "$lib" "$tree$lib"
  done
}

# What a device running patchd carries in its image: the daemon's configuration (the
# repository URL and the maintenance window come from a drop-in the scenario writes at
# boot), the publisher's trusted root, a machine id, a dbus-daemon for a private bus
# (the busybox guest has no system bus and no systemd), and a health check that fails
# in v3 only (a release that boots but is not healthy).
vm_patchd_files() {
  local tree=$1 release=$2 p=$VM_CACHE/parts
  mkdir -p "$tree/usr/share/patchd" "$tree/etc/patchd/patchd.toml.d" "$tree/usr/lib/vm"
  cp "$VM_DIR/guest/patchd.toml" "$tree/etc/patchd/patchd.toml"
  cp "$p/repo-base/metadata/1.root.json" "$tree/usr/share/patchd/root.json"
  echo 5f1c0d2e7a9b4c3d8e6f0a1b2c3d4e5f >"$tree/etc/machine-id"
  # The time zone database (tzdata) for the maintenance windows: UTC is enough here.
  mkdir -p "$tree/usr/share/zoneinfo/Etc"
  cp /usr/share/zoneinfo/Etc/UTC "$tree/usr/share/zoneinfo/Etc/UTC"
  cp /usr/share/zoneinfo/Etc/UTC "$tree/usr/share/zoneinfo/UTC"
  ln -sf /usr/share/zoneinfo/Etc/UTC "$tree/etc/localtime"
  cp "$VM_DIR/guest/patchd-guest.sh" "$tree/usr/lib/vm/patchd-guest.sh"
  cp "$VM_DIR/guest/bus.conf" "$tree/usr/lib/vm/bus.conf"
  cp /usr/bin/dbus-daemon "$tree/usr/bin/dbus-daemon"
  vm_copy_libs "$tree" /usr/bin/dbus-daemon
  local rc=0 why="all good"
  if [ "$release" = v3 ]; then rc=1; why="v3 is broken on purpose"; fi
  printf '#!/bin/sh\necho "vm-service: %s"\nexit %s\n' "$why" "$rc" \
    >"$tree/etc/patchd/health.d/10-vm-service"
  chmod 755 "$tree/etc/patchd/health.d/10-vm-service"
}

# The publisher's side: keys and an initialised TUF repository (root v1, no releases).
# Devices carry its root; scenarios copy it and publish releases into the copy.
vm_build_repo() {
  local p=$1
  "$VM_TOP/target/release/patchpub" --repo "$p/repo-base" --keys "$p/repo-keys" init \
    >/dev/null || vm_die "patchpub init failed"
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
  # $2: more modules (btrfs for the apt guest's root filesystem).
  grub-mkimage -O i386-pc -o "$out.core" -p '(hd0,msdos1)/grub' \
    biosdisk part_msdos ext2 normal configfile linux loadenv test echo serial \
    terminal sleep reboot halt gzio cat ${2:-} || vm_die "grub-mkimage failed"
  local core_sectors=$(( ($(stat -c %s "$out.core") + SECTOR - 1) / SECTOR ))
  [ "$core_sectors" -lt "$((P1_START - 1))" ] || vm_die "core.img does not fit before the first partition"
  cp /usr/lib/grub/i386-pc/boot.img "$out.boot"
}

# The daemon scenarios need the release binaries (tests/suites/vm builds them).
vm_have_patchd() {
  local b
  for b in patchd patchctl patchpub; do [ -x "$VM_TOP/target/release/$b" ] || return 1; done
}

# Builds (or reuses) the cached parts: kernel, initramfs, GRUB, boot partition, root
# images of the releases, empty data partition. Cheap when nothing changed.
vm_build() {
  mkdir -p "$VM_CACHE"
  local kdir key stamp
  kdir=$(vm_kernel)
  [ -f "$VM_GRUB_SNIPPET" ] || vm_die "GRUB snippet $VM_GRUB_SNIPPET missing"
  key=$( { cat "$VM_DIR"/guest/* "$VM_DIR/lib.sh" "$VM_GRUB_SNIPPET"; echo "$VM_KVER";
    for b in patchd patchctl patchpub; do
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
  if vm_have_patchd; then vm_build_repo "$p"; fi
  # Boot partition: the try-once script and a fresh environment block.
  mkdir -p "$tmp/boot/grub"
  cp "$VM_DIR/guest/grub.cfg" "$tmp/boot/grub/grub.cfg"
  cp "$VM_GRUB_SNIPPET" "$tmp/boot/grub/patchd-ab.cfg"
  grub-editenv "$tmp/boot/grub/grubenv" create
  grub-editenv "$tmp/boot/grub/grubenv" set patchd_order=a patchd_a_ok=1
  # ext4, journaled: patchd replaces grubenv by rename on this partition, and a power
  # cut right after that left an ext2 /boot inconsistent (found by daemon-power-cut;
  # the guest runs no fsck). GRUB's save_env writes the block in place either way.
  vm_mkfs ext4 "$tmp/boot" "$p/boot.img" "$P1_SIZE" boot
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
  if vm_have_patchd; then
    # Factory state: slot a holds v1, installed and good (what a device leaves the
    # factory with; patchd's own status record of the slot).
    mkdir -p "$tmp/data/slots"
    printf '{"slot":"a","state":"good","version":"1.0.0","sha256":"%s","size":%s,"installed_at":null}\n' \
      "$(sha256sum <"$p/root-v1.img" | cut -d' ' -f1)" "$(stat -c %s "$p/root-v1.img")" \
      >"$tmp/data/slots/a.json"
  fi
  vm_mkfs ext4 "$tmp/data" "$p/data.img" "$P4_SIZE" data
  rm -rf "$tmp"
  echo "$key" >"$stamp"
}

# Assembles a disk image: $1 path, $2 release in slot a, $3 release in slot b (or "-"),
# $4 the data partition's image (default data: the busybox releases' factory state).
vm_assemble() {
  local disk=$1 a=$2 b=$3 data=${4:-data} p=$VM_CACHE/parts
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
  vm_put_part "$disk" 4 "$p/$data.img" sparse
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

# --- the systemd-based release --------------------------------------------------------

# A minimal Debian (debootstrap --variant=minbase) with systemd as PID 1, dbus, polkit
# and udev, plus our Debian package: patchd runs as the packaged patchd.service, next to
# the packaged patchd-boot-check.service, D-Bus policy and polkit actions. Needs root
# (debootstrap, chroot) and the Debian archive.
VM_SD_SUITE=${VM_SD_SUITE:-bookworm}
VM_SD_MIRROR=${VM_SD_MIRROR:-http://deb.debian.org/debian}
VM_SD_PACKAGES=systemd,systemd-sysv,dbus,polkitd,libpam-systemd,udev

# vm_debootstrap [PREFIX PACKAGES [DEBOOTSTRAP_OPTION...]]: the cached base tree (keyed by
# suite and package list) in $VM_CACHE/PREFIX-KEY; prints its path. Default: the systemd
# guest's (no apt). The apt guest's is "dbs-apt" with apt (tests/vm/lib-apt.sh).
vm_debootstrap() {
  local prefix=${1:-debootstrap} pkgs=${2:-$VM_SD_PACKAGES} key dir
  if [ $# -ge 2 ]; then shift 2; else set -- --exclude=apt; fi
  key=$(echo "$VM_SD_SUITE $pkgs" | sha256sum | cut -c1-12)
  dir=$VM_CACHE/$prefix-$key
  if [ ! -f "$dir/.done" ]; then
    rm -rf "$dir" "$VM_CACHE/$prefix"-*
    vm_log "debootstrap $VM_SD_SUITE ($pkgs)"
    local t=$SECONDS
    debootstrap --variant=minbase --include="$pkgs" "$@" \
      "$VM_SD_SUITE" "$dir/root" "$VM_SD_MIRROR" >"$VM_CACHE/$prefix.log" 2>&1 ||
      { tail -n 20 "$VM_CACHE/debootstrap.log" >&2; tail -n 20 "$dir/root/debootstrap/debootstrap.log" >&2 2>/dev/null
        vm_die "debootstrap failed (log: $VM_CACHE/$prefix.log)"; }
    # Lean: no documentation, manuals or translations, now or from later installs.
    cat >"$dir/root/etc/dpkg/dpkg.cfg.d/01-vm-nodoc" <<EOT
path-exclude /usr/share/doc/*
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/bash-completion/*
path-exclude /usr/share/zsh/*
path-exclude /usr/share/fish/*
EOT
    rm -rf "$dir/root"/usr/share/{doc,man,info,locale}/* "$dir/root"/var/cache/apt/* \
      "$dir/root"/var/lib/apt/lists/* "$dir/root"/var/log/*.log
    touch "$dir/.done"
    vm_log "debootstrap done in $((SECONDS - t))s ($(du -sm "$dir/root" | cut -f1) MiB)"
  fi
  echo "$dir/root"
}

# vm_deb: our Debian package, built as tests/suites/deb builds it (cargo-deb from the
# release binaries); reused while it is newer than the release binaries. Prints its path.
vm_deb() {
  local deb
  deb=$(ls -t "$VM_TOP"/target/debian/patchd_*.deb 2>/dev/null | head -n 1)
  if [ -z "$deb" ] || [ "$VM_TOP/target/release/patchd" -nt "$deb" ] ||
    [ "$VM_TOP/target/release/patchctl" -nt "$deb" ]; then
    vm_log "building the Debian package (cargo deb)"
    (cd "$VM_TOP" && export PATH="$HOME/.cargo/bin:$PATH" &&
      packaging/gen-docs target/release target/assets >/dev/null &&
      rm -f target/debian/patchd_*.deb && cargo deb --no-build --quiet >/dev/null) >&2 ||
      vm_die "cargo deb failed (is cargo-deb installed? tests/suites/deb installs it)"
    deb=$(ls -t "$VM_TOP"/target/debian/patchd_*.deb | head -n 1)
  fi
  echo "$deb"
}

# vm_build_systemd: root images sv1 and sv2 (the same tree, /etc/vm-release differs) and
# their data partition (slot a holds sv1, good), cached like the other parts.
vm_build_systemd() {
  vm_have_patchd || vm_die "release binaries missing"
  local base deb key stamp p=$VM_CACHE/parts sd=$VM_DIR/guest-systemd
  base=$(vm_debootstrap)
  deb=$(vm_deb)
  key=$( { cat "$sd"/* "$VM_DIR/guest/patchd.toml" "$p/repo-base/metadata/1.root.json" \
    "$p/initrd.img"; sha256sum "$deb"; echo "$base $VM_KVER"; } | sha256sum | cut -c1-16)
  stamp=$p/.sd-key
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ]; then return 0; fi
  vm_log "building the systemd releases (key $key)"
  local t=$SECONDS tmp tree kdir
  kdir=$(vm_kernel)
  tmp=$(mktemp -d); tree=$tmp/root
  cp -a "$base" "$tree"
  cp "$deb" "$tree/tmp/patchd.deb"
  chroot "$tree" dpkg -i /tmp/patchd.deb >"$tmp/dpkg.log" 2>&1 ||
    { cat "$tmp/dpkg.log" >&2; vm_die "dpkg -i of our package failed in the systemd root"; }
  rm -f "$tree/tmp/patchd.deb"
  # The device's configuration (as an admin would write it), the publisher's root, the
  # health check, a fixed machine id, the data and boot partitions, the network.
  cp "$VM_DIR/guest/patchd.toml" "$tree/etc/patchd/patchd.toml"
  mkdir -p "$tree/etc/patchd/patchd.toml.d" "$tree/etc/patchd/health.d" "$tree/usr/share/patchd" \
    "$tree/boot/grub-part" "$tree/var/lib/patchd" "$tree/usr/lib/vm"
  cp "$p/repo-base/metadata/1.root.json" "$tree/usr/share/patchd/root.json"
  # It passes, leaving a child behind and one that left its process group: both must die
  # with the check's systemd scope.
  printf '#!/bin/sh\necho "vm-service: all good"\nsleep 600 &\nsetsid sleep 601 &\nexit 0\n' \
    >"$tree/etc/patchd/health.d/10-vm-service"
  chmod 755 "$tree/etc/patchd/health.d/10-vm-service"
  echo 5f1c0d2e7a9b4c3d8e6f0a1b2c3d4e60 >"$tree/etc/machine-id"
  echo patchd-vm >"$tree/etc/hostname"
  cp "$sd/fstab" "$tree/etc/fstab"
  mkdir -p "$tree/etc/systemd/network"
  cp "$sd/10-eth0.network" "$tree/etc/systemd/network/"
  cp "$sd/vm-config.service" "$sd/vm-test.service" "$tree/etc/systemd/system/"
  install -m 755 "$sd/hook.sh" "$tree/usr/lib/vm/hook.sh"
  install -m 644 "$sd/lib.sh" "$tree/usr/lib/vm/lib.sh"
  ln -sf /usr/share/zoneinfo/Etc/UTC "$tree/etc/localtime"
  # An unprivileged user for the polkit refusal.
  chroot "$tree" useradd -u 1000 -M -s /usr/sbin/nologin tester ||
    vm_die "useradd in the systemd root failed"
  # The package leaves patchd.service disabled until configured; configured, an admin
  # enables it. Nothing pulls boot-complete.target without systemd-boot's boot counting,
  # so this machine asks for it (patchd-boot-check.service is RequiredBy it).
  chroot "$tree" systemctl enable patchd.service vm-config.service vm-test.service \
    systemd-networkd.service >/dev/null 2>&1 || vm_die "systemctl enable in the systemd root failed"
  chroot "$tree" systemctl add-wants multi-user.target boot-complete.target >/dev/null 2>&1 ||
    vm_die "systemctl add-wants boot-complete.target failed"
  # Nothing logs in on the console; timers are noise in a minute-long boot.
  chroot "$tree" systemctl mask serial-getty@ttyS0.service getty@tty1.service \
    e2scrub_all.timer e2scrub_reap.service fstrim.timer systemd-timesyncd.service \
    >/dev/null 2>&1 || true
  cp "$kdir/boot/vmlinuz-$VM_KVER" "$tree/boot/vmlinuz"
  cp "$p/initrd.img" "$tree/boot/initrd.img"
  local r mib
  for r in sv1 sv2; do
    echo "$r" >"$tree/etc/vm-release"
    mib=$(( ($(du -sm "$tree" | cut -f1) * 11 / 10 + 16 + 3) / 4 * 4 ))
    [ "$mib" -le $((P2_SIZE / 2048)) ] || vm_die "systemd root of ${mib} MiB exceeds the slot"
    vm_mkfs ext4 "$tree" "$p/root-$r.img" $((mib * 2048)) root
  done
  mkdir -p "$tmp/data/vm" "$tmp/data/slots"
  printf '{"slot":"a","state":"good","version":"1.0.0","sha256":"%s","size":%s,"installed_at":null}\n' \
    "$(sha256sum <"$p/root-sv1.img" | cut -d' ' -f1)" "$(stat -c %s "$p/root-sv1.img")" \
    >"$tmp/data/slots/a.json"
  vm_mkfs ext4 "$tmp/data" "$p/data-sd.img" "$P4_SIZE" data
  rm -rf "$tmp"
  echo "$key" >"$stamp"
  vm_log "systemd releases built in $((SECONDS - t))s (root image $(( $(stat -c %s "$p/root-sv1.img") / 1048576 )) MiB)"
}

# --- observing and changing the guest's disks from the host (qemu stopped) ----------

# After a power cut a partition's last changes may be in its ext4 journal only: Linux
# replays the journal when it mounts the partition, GRUB (and debugfs) read without it.
# vm_replay IMAGE replays it on a copy taken from the disk, as a mount would.
vm_replay() {
  e2fsck -E journal_only -y "$1" >/dev/null 2>&1 || true
}

# vm_cat DISK PART PATH: prints a file of an ext2/4 partition: the boot partition (1) as
# GRUB reads it (no journal replay), the others as Linux mounts them (journal replayed).
vm_cat() {
  local tmp; tmp=$(mktemp)
  vm_get_part "$1" "$2" "$tmp"
  [ "$2" = 1 ] || vm_replay "$tmp"
  debugfs -R "cat $3" "$tmp" 2>/dev/null
  rm -f "$tmp"
}

# vm_put DISK PART LOCAL PATH: writes a file into an ext2/4 partition (replacing it),
# as a Linux host would: journal replayed first (a write on top of unreplayed journal
# entries would be undone, or worse, when the guest replays them).
vm_put() {
  local tmp; tmp=$(mktemp)
  vm_get_part "$1" "$2" "$tmp"
  vm_replay "$tmp"
  debugfs -w -f - "$tmp" >/dev/null 2>&1 <<EOF
rm $4
write $3 $4
EOF
  debugfs -R "stat $4" "$tmp" >/dev/null 2>&1 || vm_die "could not write $4 on partition $2"
  vm_put_part "$1" "$2" "$tmp"
  rm -f "$tmp"
}

# vm_tree_put IMAGE TREE: writes the directories, files and symlinks of the host
# directory TREE into the ext2/4 filesystem IMAGE at the same paths (modes kept, owned by
# root when run as root; an existing file is replaced). debugfs follows no symlinks, so
# TREE must use the image's real paths (usr/lib, not lib, on the merged-/usr roots).
vm_tree_put() {
  local img=$1 tree=$2 f missing
  { (cd "$tree" && find . -mindepth 1 -type d | sed 's|^\.||') | while read -r f; do echo "mkdir $f"; done
    (cd "$tree" && find . -mindepth 1 ! -type d | sed 's|^\.||') | while read -r f; do
      echo "rm $f"
      if [ -L "$tree$f" ]; then echo "symlink $f $(readlink "$tree$f")"; else echo "write $tree$f $f"; fi
    done; } | debugfs -w -f - "$img" >/dev/null 2>&1
  missing=$( (cd "$tree" && find . -mindepth 1 ! -type d | sed 's|^\.||') | while read -r f; do
    debugfs -R "stat $f" "$img" 2>/dev/null | grep -q '^Inode:' || echo "$f"; done)
  [ -z "$missing" ] || { vm_log "not written into $img: $missing"; return 1; }
}

# vm_part_tree DISK N TREE: vm_tree_put on partition N of DISK (journal replayed first).
vm_part_tree() {
  local tmp rc=0; tmp=$(mktemp)
  vm_get_part "$1" "$2" "$tmp"
  vm_replay "$tmp"
  vm_tree_put "$tmp" "$3" || rc=1
  [ "$rc" = 1 ] || vm_put_part "$1" "$2" "$tmp"
  rm -f "$tmp"
  return "$rc"
}

# vm_guest_modules TREE NAME MODULE...: the Debian kernel's modules MODULE... and what
# they depend on, laid out by depmod under TREE/usr/lib/modules, with
# TREE/etc/modules-load.d/NAME.conf so the guest's systemd-modules-load.service loads
# them at boot (the systemd guest's minimal root has neither a module tree nor kmod
# tools). Write TREE into a root with vm_part_tree or vm_tree_put.
vm_guest_modules() {
  local tree=$1 name=$2 kdir m sub mdir; shift 2
  kdir=$(vm_kernel)
  mdir=$tree/usr/lib/modules/$VM_KVER
  for m in $(modprobe -d "$kdir" -S "$VM_KVER" --show-depends -a "$@" |
    awk '$1=="insmod"{print $2}'); do
    sub=$mdir/kernel/$(basename "$(dirname "$m")")
    mkdir -p "$sub"
    cp "$m" "$sub/"
  done
  depmod -b "$tree/usr" "$VM_KVER" || vm_die "depmod failed"
  mkdir -p "$tree/etc/modules-load.d"
  printf '%s\n' "$@" >"$tree/etc/modules-load.d/$name.conf"
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
    $(vm_nic) ${VM_QEMU_EXTRA:-} &
  VM_PID=$!
  vm_log "qemu started (pid $VM_PID), console: $log"
}

# qemu user-mode networking when VM_NET=1: the guest is 10.0.2.15 and reaches the
# host's 127.0.0.1 at 10.0.2.2 (the repository's web server listens there).
vm_nic() {
  if [ "${VM_NET:-0}" = 1 ]; then echo "-nic user,model=virtio-net-pci"; else echo "-nic none"; fi
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

# vm_wait_progress LOG PHASES PHASE PCT TIMEOUT: waits until the guest's progress
# markers ("VMTEST: progress PHASE N%") reach PCT in PHASE, or a later phase of the
# ordered list PHASES, or staging is over (the switch or a reboot request).
vm_wait_progress() {
  local log=$1 phases=$2 want=$3 pct=$4 deadline line ph p wi=0 pi i=0 x
  for x in $phases; do i=$((i + 1)); [ "$x" = "$want" ] && wi=$i; done
  deadline=$(( $(vm_now_us) + $5 * 1000000 ))
  while kill -0 "$VM_PID" 2>/dev/null; do
    [ "$(vm_now_us)" -lt "$deadline" ] || return 1
    line=$(grep -aE 'VMTEST: (progress|state staged|state switching|report .*reboot-requested)|patchd-log: .*switching' "$log" | tail -n 1 | vm_clean)
    case $line in
      *"VMTEST: progress "*)
        set -- ${line#*VMTEST: progress }; ph=$1; p=${2%\%}
        i=0 pi=0
        for x in $phases; do i=$((i + 1)); [ "$x" = "$ph" ] && pi=$i; done
        if [ "$pi" -gt "$wi" ] || { [ "$pi" = "$wi" ] && [ "$p" -ge "$pct" ]; }; then return 0; fi
        ;;
      "") ;;
      *) return 0 ;;
    esac
    sleep 0.05
  done
  return 1
}

# Console text without carriage returns and terminal escapes (GRUB clears the screen).
vm_clean() { sed -e 's/\x1b\[[0-9;]*[A-Za-z]//g' -e 's/\r//g'; }

# Hard power-off: what a power cut does to the guest.
vm_kill() {
  kill -KILL "$VM_PID" 2>/dev/null || true
  wait "$VM_PID" 2>/dev/null || true
}

# --- the publisher's repository, served to the guest ---------------------------------

# vm_repo_setup DIR: a copy of the cached repository (root v1 only) and its keys.
vm_repo_setup() {
  rm -rf "$1/repo" "$1/keys"
  cp -a "$VM_CACHE/parts/repo-base" "$1/repo"
  cp -a "$VM_CACHE/parts/repo-keys" "$1/keys"
}

# vm_publish DIR vN [VERSION [IMAGE [ARG...]]]: publishes release vN's root filesystem
# image as version N.0.0 (or VERSION: the same content republished under a new version;
# IMAGE: another image than the cached root-vN.img; ARGs: more of `patchpub add`'s, such
# as --component). Full images only: these scenarios prove boot and rollback; delta
# methods have their own tests.
vm_publish() {
  local n=${2#v}
  "$VM_TOP/target/release/patchpub" --repo "$1/repo" --keys "$1/keys" add \
    --product vm-box --version "${3:-$n.0.0}" --image "${4:-$VM_CACHE/parts/root-$2.img}" \
    --kind bugfix --severity medium --summary "VM test release $2" \
    --no-chunk-index "${@:5}" >/dev/null ||
    vm_die "patchpub add $2 failed"
  vm_log "published $2 (${3:-$n.0.0})"
}

# vm_serve DIR: serves DIR/repo on 127.0.0.1 (an ephemeral port); sets VM_SERVER_PID
# and VM_REPO_URL (as the guest reaches it through qemu's user-mode networking).
# VM_SERVE_RATE (bytes/s) throttles files past their first MiB (0 or unset: no limit).
vm_serve() {
  local log=$1/http.log port="" i
  # The file exists before the server's shell opens it: otherwise the first read below
  # can come first and fail (under pipefail that ended the scenario without a word).
  : >"$log"
  python3 -u "$VM_TOP/tests/vm/serve.py" --bind 127.0.0.1 --directory "$1/repo" \
    --rate "${VM_SERVE_RATE:-0}" >>"$log" 2>&1 &
  VM_SERVER_PID=$!
  for i in $(seq 100); do
    port=$(sed -n 's/.* port \([0-9]*\) .*/\1/p' "$log" | head -n 1)
    [ -n "$port" ] && break
    sleep 0.1
  done
  [ -n "$port" ] || vm_die "web server did not start: $(cat "$log")"
  VM_REPO_URL=http://10.0.2.2:$port/
  vm_log "repository served on 127.0.0.1:$port (guest: $VM_REPO_URL)"
}

vm_serve_stop() {
  if [ -n "${VM_SERVER_PID:-}" ]; then
    kill "$VM_SERVER_PID" 2>/dev/null || true
    wait "$VM_SERVER_PID" 2>/dev/null || true
    VM_SERVER_PID=
  fi
}

# A maintenance window three days from now (closed for the whole scenario).
vm_window_closed() {
  printf '%s 03:00-03:01' "$(date -u -d '+3 days' +%a)"
}

# A maintenance window open now and for the next three hours (UTC, the guest's zone).
vm_window_now() {
  local h; h=$(date -u +%H)
  printf '%s %s:00-%02d:00' "$(date -u +%a)" "$h" $(( (10#$h + 3) % 24 ))
}

# --- daemon scenarios ----------------------------------------------------------------

# vm_daemon_hook GOAL EXTRA_REBOOTS: the guest's hook starts `patchd run` against the
# served repository (GRUB boots per trial: $VM_BOOT_ATTEMPTS, default patchd's) and runs
# until patchd reboots the machine or its status matches GOAL
# (see tests/vm/guest/patchd-guest.sh); after GOAL it runs $VM_HOOK_AFTER (a function
# $VM_HOOK_DEFS may define), then reboots EXTRA_REBOOTS more times.
vm_daemon_hook() {
  cat >"$W/onboot.sh" <<HOOK
. /usr/lib/vm/patchd-guest.sh
vmp_start "$VM_REPO_URL" "${VM_WINDOW:-$(vm_window_now)}" "${VM_BOOT_ATTEMPTS:-}"
${VM_HOOK_DEFS:-}
vmp_run '$1' ${VM_GUEST_TIMEOUT:-900} && ${VM_HOOK_AFTER:-true} && vmp_end
HOOK
  vm_put "$DISK" 4 "$W/onboot.sh" /vm/onboot.sh
  echo "$2" >"$W/extra-reboots"
  vm_put "$DISK" 4 "$W/extra-reboots" /vm/extra-reboots
}

# What the guest reported (read from its data partition), for the scenario log.
vm_show_results() {
  echo "--- boots.log"; vm_cat "$DISK" 4 /vm/boots.log
  echo "--- report.log"; vm_cat "$DISK" 4 /vm/report.log
  echo "--- state.json"; vm_cat "$DISK" 4 /state.json; echo
  echo "--- grubenv"; vm_grubenv "$DISK" list
}

# vm_audit_events DISK: the event names of patchd's audit log on the data partition,
# one a line, oldest first.
vm_audit_events() {
  vm_cat "$1" 4 /audit.log | sed -n 's/.*"event": *"\([^"]*\)".*/\1/p'
}

# vm_boot_console LOG N: the console of the guest's boot number N (from the init's
# "VMTEST: booted boot=N" to GRUB's next choice).
vm_boot_console() {
  vm_clean <"$1" | awk -v n="$2" '
    /VMTEST: booted boot=/ { split($0, f, "boot="); split(f[2], g, " "); on = (g[1] == n) }
    on && /^patchd: booting slot/ { on = 0 }
    on { print }'
}

# vm_assert_report N LINE: line N of the guest's report.log.
vm_assert_report() {
  assert_eq "guest report $1" "$(vm_cat "$DISK" 4 /vm/report.log | sed -n "$1p")" "$2"
}

# Keeps the disk and repository after a daemon scenario for the next one (shared boots).
vm_share_state() {
  local d=$VM_CACHE/runs/.shared-$1
  rm -rf "$d"; mkdir -p "$d"
  cp --sparse=always "$DISK" "$d/disk.img"
  cp -a "$W/repo" "$W/keys" "$d/"
}

# vm_use_state NAME: starts from a shared state, or fails naming the scenario to run first.
vm_use_state() {
  local d=$VM_CACHE/runs/.shared-$1
  [ -f "$d/disk.img" ] || fail "no shared state $1: run daemon-good-update first"
  cp --sparse=always "$d/disk.img" "$DISK"
  rm -rf "$W/repo" "$W/keys"
  cp -a "$d/repo" "$d/keys" "$W/"
}

# The apt guest (Debian on btrfs subvolumes, the apt source): tests/vm/lib-apt.sh.
# shellcheck source=lib-apt.sh
. "$VM_DIR/lib-apt.sh"
