# The apt guest of the VM tests: a minimal Debian whose root is a btrfs subvolume slot
# (slots/a, slots/b on /dev/vda2, GRUB boots either with rootflags=subvol=…) next to a
# /var subvolume both roots share, upgraded from a signed apt archive the host builds
# and serves. Sourced by lib.sh. Needs root (debootstrap, chroot, a loop mount to make
# the btrfs filesystem). See docs/vm-tests.md, "The apt guest".
# shellcheck shell=bash

VM_APT_DIR=$VM_DIR/guest-apt
# Packages besides debootstrap's minbase (which has apt): btrfs-progs, as on any btrfs
# server (the power-cut scenario lists the subvolumes with it).
VM_APT_PACKAGES=btrfs-progs
# Our packages in the archive: vm-probe (the program the health check runs) and vm-tool
# (a plain upgrade). v1 is installed in the image; v2 is a good upgrade of both; v3 a
# vm-probe whose new version fails the health check.
VM_APT_V1="vm-probe=1.0-1 vm-tool=1.0-1"
VM_APT_V2="vm-probe=1.0-2 vm-tool=1.0-2"
VM_APT_V3="vm-probe=1.0-3 vm-tool=1.0-2"

# The kernel as Debian packages it: linux-image-<abi> ships /boot/vmlinuz-<abi> and
# /boot/initrd.img-<abi>, its postinst has linux-update-symlinks (linux-base) point
# /boot/vmlinuz and /boot/initrd.img at them (link_in_boot = yes in /etc/kernel-img.conf,
# relative links), and the metapackage linux-image-amd64 depends on the current ABI, so
# a kernel upgrade installs a package under a new name next to the old one. The image
# has ABI 1 (the kernel the tests boot, VM_KVER); the archive's linux-image-amd64
# 1.0-2 moves to the next ABI: the same kernel binary under the next ABI's file names,
# with an initramfs that also loads the crc7 module (nothing else does), which is how a
# booted guest tells which initramfs GRUB loaded.
vm_apt_k1() { echo "$VM_KVER"; }
vm_apt_k2() {
  local abi=${VM_KVER#*-}
  abi=${abi%%-*}
  echo "${VM_KVER%%-*}-$((abi + 1))-${VM_KVER#*-*-}"
}
VM_APT_K1="linux-image-amd64=1.0-1 linux-image-$(vm_apt_k1)=1.0-1"
VM_APT_K2="linux-image-amd64=1.0-2 linux-image-$(vm_apt_k2)=1.0-1"

# vm_apt_layout: the apt guest's disk. The root filesystem (btrfs, both slots and /var)
# takes partition 2; partition 3 is a 1 MiB placeholder, so the boot (1) and data (4)
# partitions keep their numbers and every host-side helper (vm_cat, vm_put,
# vm_grubenv) works unchanged. Call it first in an apt scenario (its own subshell).
vm_apt_layout() {
  P2_SIZE=$((768 * 2048))
  P3_START=$((P2_START + P2_SIZE)); P3_SIZE=2048
  P4_START=$((P3_START + P3_SIZE)); P4_SIZE=$((128 * 2048))
  DISK_SECTORS=$((P4_START + P4_SIZE))
}

# vm_apt_deb OUT NAME VERSION SCRIPT URGENCY TEXT: one package (Architecture: all) with
# /usr/bin/NAME = SCRIPT and a Debian changelog, built with dpkg-deb.
vm_apt_deb() {
  local out=$1 name=$2 v=$3 script=$4 urgency=$5 text=$6 b
  b=$(mktemp -d)
  mkdir -p "$b/DEBIAN" "$b/usr/bin" "$b/usr/share/doc/$name" "$b/usr/share/$name"
  printf 'Package: %s\nVersion: %s\nArchitecture: all\nMaintainer: VM Test <vm@example.org>\nSection: admin\nPriority: optional\nDescription: VM test package %s\n' \
    "$name" "$v" "$name" >"$b/DEBIAN/control"
  printf '%s\n' "$script" >"$b/usr/bin/$name"
  chmod 755 "$b/usr/bin/$name"
  echo "$v" >"$b/usr/share/$name/version"
  printf '%s (%s) bookworm-security; urgency=%s\n\n  * %s\n\n -- VM Test <vm@example.org>  Mon, 07 Dec 2026 06:00:00 +0000\n\n' \
    "$name" "$v" "$urgency" "$text" | gzip -9n >"$b/usr/share/doc/$name/changelog.Debian.gz"
  dpkg-deb -Zgzip --root-owner-group --build "$b" "$out/${name}_${v}_all.deb" >/dev/null ||
    vm_die "dpkg-deb $name $v failed"
  rm -rf "$b"
}

# vm_apt_kdeb OUT ABI KERNEL INITRD: linux-image-ABI 1.0-1 (Architecture: amd64) with
# /boot/vmlinuz-ABI and /boot/initrd.img-ABI and the maintainer scripts of Debian's
# kernel packages: linux-update-symlinks at configure and remove, then the
# /etc/kernel/postinst.d (postrm.d) hooks.
vm_apt_kdeb() {
  local out=$1 abi=$2 b name=linux-image-$2
  b=$(mktemp -d)
  mkdir -p "$b/DEBIAN" "$b/boot" "$b/usr/share/doc/$name"
  printf 'Package: %s\nVersion: 1.0-1\nArchitecture: amd64\nMaintainer: VM Test <vm@example.org>\nDepends: linux-base\nSection: kernel\nPriority: optional\nDescription: Linux %s for the VM tests\n' \
    "$name" "$abi" >"$b/DEBIAN/control"
  cp "$3" "$b/boot/vmlinuz-$abi"
  cp "$4" "$b/boot/initrd.img-$abi"
  cat >"$b/DEBIAN/postinst" <<EOT
#!/bin/sh -e
version=$abi
image_path=/boot/vmlinuz-\$version
[ "\$1" = configure ] || exit 0
if [ -z "\$2" ]; then change=install; else change=upgrade; fi
linux-update-symlinks \$change \$version \$image_path
if [ -d /etc/kernel/postinst.d ]; then
  DEB_MAINT_PARAMS="\$*" run-parts --report --exit-on-error --arg=\$version --arg=\$image_path /etc/kernel/postinst.d
fi
EOT
  cat >"$b/DEBIAN/postrm" <<EOT
#!/bin/sh -e
version=$abi
image_path=/boot/vmlinuz-\$version
[ "\$1" = remove ] || exit 0
linux-update-symlinks remove \$version \$image_path
if [ -d /etc/kernel/postrm.d ]; then
  DEB_MAINT_PARAMS="\$*" run-parts --report --exit-on-error --arg=\$version --arg=\$image_path /etc/kernel/postrm.d
fi
EOT
  chmod 755 "$b/DEBIAN/postinst" "$b/DEBIAN/postrm"
  printf '%s (1.0-1) bookworm-security; urgency=high\n\n  * Linux %s (CVE-2026-4545).\n\n -- VM Test <vm@example.org>  Mon, 07 Dec 2026 06:00:00 +0000\n\n' \
    "$name" "$abi" | gzip -9n >"$b/usr/share/doc/$name/changelog.Debian.gz"
  dpkg-deb -Zgzip --root-owner-group --build "$b" "$out/${name}_1.0-1_amd64.deb" >/dev/null ||
    vm_die "dpkg-deb $name failed"
  rm -rf "$b"
}

# vm_apt_kmeta OUT VERSION ABI: the metapackage linux-image-amd64 VERSION, on ABI.
vm_apt_kmeta() {
  local out=$1 v=$2 b
  b=$(mktemp -d)
  mkdir -p "$b/DEBIAN" "$b/usr/share/doc/linux-image-amd64"
  printf 'Package: linux-image-amd64\nVersion: %s\nArchitecture: amd64\nMaintainer: VM Test <vm@example.org>\nDepends: linux-image-%s\nSection: kernel\nPriority: optional\nDescription: Linux for 64-bit PCs (meta-package)\n' \
    "$v" "$3" >"$b/DEBIAN/control"
  printf 'linux-image-amd64 (%s) bookworm-security; urgency=high\n\n  * Move to ABI %s.\n\n -- VM Test <vm@example.org>  Mon, 07 Dec 2026 06:00:00 +0000\n\n' \
    "$v" "$3" | gzip -9n >"$b/usr/share/doc/linux-image-amd64/changelog.Debian.gz"
  dpkg-deb -Zgzip --root-owner-group --build "$b" "$out/linux-image-amd64_${v}_amd64.deb" >/dev/null ||
    vm_die "dpkg-deb linux-image-amd64 $v failed"
  rm -rf "$b"
}

# vm_apt_linux_base: Debian's linux-base (linux-update-symlinks), fetched once.
vm_apt_linux_base() {
  local d=$VM_CACHE/linux-base
  if [ ! -f "$d/.done" ]; then
    rm -rf "$d"; mkdir -p "$d"
    (cd "$d" && apt-get download linux-base >/dev/null 2>&1) || vm_die "apt-get download linux-base failed"
    touch "$d/.done"
  fi
  ls "$d"/linux-base_*.deb
}

# vm_apt_packages OUT: every version of our packages.
vm_apt_packages() {
  local out=$1 v
  mkdir -p "$out"
  for v in 1.0-1 1.0-2; do
    vm_apt_deb "$out" vm-probe "$v" "#!/bin/sh
echo \"vm-probe $v: service answers\"" medium "vm-probe $v."
    vm_apt_deb "$out" vm-tool "$v" "#!/bin/sh
echo \"vm-tool $v\"" medium "vm-tool $v (CVE-2026-4242)."
  done
  vm_apt_deb "$out" vm-probe 1.0-3 "#!/bin/sh
echo \"vm-probe 1.0-3: service does not answer (broken on purpose)\"
exit 1" high "vm-probe 1.0-3 (CVE-2026-4343)."
}

# vm_apt_gpg ARGS...: gpg with the archive's key (made once per parts build).
vm_apt_gpg() {
  GNUPGHOME=$VM_CACHE/parts/apt-gnupg gpg --batch --quiet --pinentry-mode loopback "$@"
}

# vm_apt_archive DIR PACKAGE=VERSION...: a flat signed archive in DIR (pool/, Packages,
# Release, InRelease) with these package versions, as the Debian security archive
# labels itself (patchd classifies its upgrades as security).
vm_apt_archive() {
  local dir=$1 pv; shift
  rm -rf "$dir"; mkdir -p "$dir/pool"
  for pv in "$@"; do
    cp "$VM_CACHE/parts/apt-debs/${pv%%=*}_${pv#*=}_"*.deb "$dir/pool/" ||
      vm_die "no package $pv"
  done
  (cd "$dir" && apt-ftparchive packages pool >Packages &&
    apt-ftparchive -o APT::FTPArchive::Release::Origin=Debian \
      -o APT::FTPArchive::Release::Label=Debian-Security \
      -o APT::FTPArchive::Release::Suite=bookworm-security \
      -o APT::FTPArchive::Release::Codename=bookworm-security release . >Release.tmp &&
    mv Release.tmp Release) || vm_die "apt-ftparchive failed"
  vm_apt_gpg --yes --clearsign -o "$dir/InRelease" "$dir/Release" ||
    vm_die "signing the archive failed"
}

# vm_build_apt: the apt guest's parts, cached: its initramfs (btrfs added), GRUB (with
# the btrfs module), boot partition, root filesystem image (btrfs: slots/a with v1
# installed, var), data partition, our packages and the archive key.
vm_build_apt() {
  vm_have_patchd || vm_die "release binaries missing"
  local tool
  for tool in debootstrap:debootstrap mkfs.btrfs:btrfs-progs btrfs:btrfs-progs \
    apt-ftparchive:apt-utils gpg:gnupg dpkg-deb:dpkg losetup:mount; do
    command -v "${tool%%:*}" >/dev/null 2>&1 ||
      vm_die "${tool%%:*} not found (install ${tool#*:}; tests/deps/apt-packages.txt)"
  done
  local base key stamp p=$VM_CACHE/parts kdir
  base=$(vm_debootstrap dbs-apt "$VM_APT_PACKAGES")
  kdir=$(vm_kernel)
  key=$( { cat "$VM_APT_DIR"/* "$VM_DIR"/guest/* "$VM_DIR/lib-apt.sh" "$VM_GRUB_SNIPPET";
    echo "$base $VM_KVER"; sha256sum "$VM_TOP"/target/release/patchd "$VM_TOP"/target/release/patchctl; } |
    sha256sum | cut -c1-16)
  stamp=$p/.apt-key
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ]; then return 0; fi
  vm_log "building the apt guest (key $key)"
  local t=$SECONDS tmp tree mnt loop
  tmp=$(mktemp -d); tree=$tmp/root; mnt=$tmp/mnt
  rm -rf "$p"/apt-*
  vm_build_initramfs "$kdir" "$p/apt-initrd.img" btrfs
  vm_build_grub "$p/apt-grub" btrfs
  # Archive key; the guest trusts it through Signed-By only.
  mkdir -p "$p/apt-gnupg"; chmod 700 "$p/apt-gnupg"
  vm_apt_gpg --passphrase '' --quick-gen-key 'VM Test Archive <vm@example.org>' ed25519 sign never ||
    vm_die "gpg key generation failed"
  vm_apt_gpg --export >"$p/apt-archive.gpg"
  vm_apt_packages "$p/apt-debs"
  vm_build_initramfs "$kdir" "$tmp/initrd-k2.img" "btrfs crc7"
  vm_apt_kdeb "$p/apt-debs" "$(vm_apt_k1)" "$kdir/boot/vmlinuz-$VM_KVER" "$p/apt-initrd.img"
  vm_apt_kdeb "$p/apt-debs" "$(vm_apt_k2)" "$kdir/boot/vmlinuz-$VM_KVER" "$tmp/initrd-k2.img"
  vm_apt_kmeta "$p/apt-debs" 1.0-1 "$(vm_apt_k1)"
  vm_apt_kmeta "$p/apt-debs" 1.0-2 "$(vm_apt_k2)"
  # Boot partition: grub.cfg for subvolume slots, the shipped snippet, the environment.
  mkdir -p "$tmp/boot/grub"
  cp "$VM_APT_DIR/grub.cfg" "$tmp/boot/grub/grub.cfg"
  cp "$VM_GRUB_SNIPPET" "$tmp/boot/grub/patchd-ab.cfg"
  grub-editenv "$tmp/boot/grub/grubenv" create
  grub-editenv "$tmp/boot/grub/grubenv" set patchd_order=a patchd_a_ok=1
  vm_mkfs ext4 "$tmp/boot" "$p/apt-boot.img" "$P1_SIZE" boot
  # The root tree: debootstrap's, v1 of our packages, the init, busybox for what
  # minbase lacks (ip, reboot, poweroff), patchd, the kernel and initramfs in /boot.
  cp -a "$base" "$tree"
  rm -f "$tree/etc/apt/sources.list"
  cp "$p/apt-archive.gpg" "$tree/usr/share/keyrings/vm-archive.gpg"
  mkdir -p "$tree/tmp/debs"
  local pv
  for pv in $VM_APT_V1 $VM_APT_K1; do cp "$p/apt-debs/${pv%%=*}_${pv#*=}_"*.deb "$tree/tmp/debs/"; done
  cp "$(vm_apt_linux_base)" "$tree/tmp/debs/"
  # Debian's kernel layout with the links in /boot (GRUB reads the slot's /boot).
  printf 'do_symlinks = yes\nlink_in_boot = yes\n' >"$tree/etc/kernel-img.conf"
  chroot "$tree" sh -c 'DEBIAN_FRONTEND=noninteractive dpkg -i /tmp/debs/*.deb' >"$tmp/dpkg.log" 2>&1 ||
    { cat "$tmp/dpkg.log" >&2; vm_die "dpkg -i of the v1 packages failed"; }
  [ "$(readlink "$tree/boot/vmlinuz")" = "vmlinuz-$VM_KVER" ] ||
    { cat "$tmp/dpkg.log" >&2; vm_die "the kernel package did not link /boot/vmlinuz"; }
  rm -rf "$tree/tmp/debs"
  # The layout patchd's apt source expects (docs/apt.md): the dpkg database lives in the
  # root (/usr/lib/sysimage/dpkg), the shared /var has a symlink to it.
  mkdir -p "$tree/usr/lib/sysimage"
  mv "$tree/var/lib/dpkg" "$tree/usr/lib/sysimage/dpkg"
  ln -s /usr/lib/sysimage/dpkg "$tree/var/lib/dpkg"
  mkdir -p "$tree/usr/lib/vm/bb" "$tree/boot/grub-part" "$tree/.btrfs" "$tree/var/lib/patchd" \
    "$tree/etc/patchd/health.d" "$tree/etc/patchd/patchd.toml.d" "$tree/usr/share/patchd"
  cp /bin/busybox "$tree/usr/lib/vm/busybox"
  local b
  for b in $(/bin/busybox --list); do ln -sf ../busybox "$tree/usr/lib/vm/bb/$b"; done
  install -m 755 "$VM_APT_DIR/init" "$tree/sbin/init"
  install -m 755 "$VM_APT_DIR/hook.sh" "$tree/usr/lib/vm/apt-hook.sh"
  cp "$VM_DIR/guest/grubenv.sh" "$tree/etc/grubenv.sh"
  echo apt >"$tree/etc/vm-release"
  echo patchd-vm >"$tree/etc/hostname"
  for b in patchd patchctl; do
    cp "$VM_TOP/target/release/$b" "$tree/usr/bin/$b"
    strip "$tree/usr/bin/$b" 2>/dev/null || true
    vm_copy_libs "$tree" "$tree/usr/bin/$b"
  done
  cp /usr/bin/dbus-daemon "$tree/usr/bin/dbus-daemon"
  vm_copy_libs "$tree" /usr/bin/dbus-daemon
  cp "$VM_APT_DIR/patchd.toml" "$tree/etc/patchd/patchd.toml"
  cp "$VM_DIR/guest/patchd-guest.sh" "$VM_DIR/guest/bus.conf" "$tree/usr/lib/vm/"
  printf '#!/bin/sh\n# The service this machine runs answers (vm-probe is its client).\nexec /usr/bin/vm-probe\n' \
    >"$tree/etc/patchd/health.d/10-vm-probe"
  chmod 755 "$tree/etc/patchd/health.d/10-vm-probe"
  echo 5f1c0d2e7a9b4c3d8e6f0a1b2c3d4e61 >"$tree/etc/machine-id"
  ln -sf /usr/share/zoneinfo/Etc/UTC "$tree/etc/localtime"
  # The publisher's root, for apt-btrfs-switch (an image release into a subvolume slot).
  cp "$p/repo-base/metadata/1.root.json" "$tree/usr/share/patchd/root.json"
  vm_apt_image_release "$tree" "$tmp/v2" "$p/apt-root-v2.tar" v2 "$VM_APT_V2"
  vm_apt_image_release "$tree" "$tmp/v3" "$p/apt-root-v3.tar" v3 "$VM_APT_V3"
  # btrfs: top level holds slots/a (the root) and var (shared /var).
  truncate -s $((P2_SIZE * SECTOR)) "$p/apt-root.img"
  mkfs.btrfs -q -f -L root "$p/apt-root.img" >/dev/null || vm_die "mkfs.btrfs failed"
  mkdir -p "$mnt"
  loop=$(losetup -f --show "$p/apt-root.img") || vm_die "losetup failed"
  if ! mount "$loop" "$mnt"; then losetup -d "$loop"; vm_die "mounting the btrfs image failed"; fi
  local rc=0
  {
    mkdir "$mnt/slots" &&
      btrfs -q subvolume create "$mnt/slots/a" >/dev/null &&
      btrfs -q subvolume create "$mnt/var" >/dev/null &&
      tar -C "$tree" --exclude=./var -c . | tar -C "$mnt/slots/a" -x &&
      mkdir -p "$mnt/slots/a/var" &&
      tar -C "$tree/var" -c . | tar -C "$mnt/var" -x &&
      mkdir -p "$mnt/var/lib/vmtest"
  } || rc=1
  umount "$mnt"; losetup -d "$loop"
  [ "$rc" = 0 ] || vm_die "filling the btrfs image failed"
  # Data partition: patchd's state. Factory record: slot a holds 1.0.0 (the v1 root
  # image as built), good: what the image source of apt-btrfs-switch compares with.
  mkdir -p "$tmp/data/vm" "$tmp/data/slots"
  printf '{"slot":"a","state":"good","version":"1.0.0","sha256":"%s","size":%s,"installed_at":null}\n' \
    "$(sha256sum <"$p/apt-root.img" | cut -d' ' -f1)" "$(stat -c %s "$p/apt-root.img")" \
    >"$tmp/data/slots/a.json"
  vm_mkfs ext4 "$tmp/data" "$p/apt-data.img" "$P4_SIZE" data
  rm -rf "$tmp"
  echo "$key" >"$stamp"
  vm_log "apt guest built in $((SECONDS - t))s (root tree $(du -sm "$base" | cut -f1) MiB before our files)"
}

# vm_apt_image_release TREE WORK OUT NAME PACKAGES: the root subvolume's content
# (everything but the shared /var; the dpkg database is in /usr) after upgrading
# TREE's copy to PACKAGES (PACKAGE=VERSION...), as the tar archive of an image release
# for btrfs slots (apt-btrfs-switch, apt-btrfs-rollback); /etc/vm-release apt-image-NAME.
vm_apt_image_release() {
  local tree=$1 t2=$2 out=$3 pv
  cp -a "$tree" "$t2"
  mkdir -p "$t2/tmp/debs"
  for pv in $5; do cp "$VM_CACHE/parts/apt-debs/${pv%%=*}_${pv#*=}_"*.deb "$t2/tmp/debs/"; done
  chroot "$t2" sh -c 'dpkg -i /tmp/debs/*.deb' >/dev/null 2>&1 || vm_die "dpkg -i of the $4 packages failed"
  rm -rf "$t2/tmp/debs"
  echo "apt-image-$4" >"$t2/etc/vm-release"
  (cd "$t2" && { find . -path ./var -prune -o -print; echo ./var; } |
    tar --no-recursion -c -f "$out" -T -) || vm_die "tar of the $4 root failed"
  rm -rf "$t2"
}

# vm_apt_publish_image DIR vN: publishes apt-root-vN.tar as release N.0.0 for the apt
# guest's image source (into DIR/repo, made by vm_repo_setup).
vm_apt_publish_image() {
  "$VM_TOP/target/release/patchpub" --repo "$1/repo" --keys "$1/keys" add \
    --product vm-apt --version "${2#v}.0.0" --format tar --image "$VM_CACHE/parts/apt-root-$2.tar" \
    --kind bugfix --severity medium --summary "apt guest root, $2 packages" \
    --no-chunk-index >/dev/null || vm_die "patchpub add $2 failed"
}

# vm_apt_image_hook GOAL: the guest's hook for the image source: the drop-in that turns
# the apt source off, then as vm_apt_patchd_hook.
vm_apt_image_hook() {
  vm_apt_patchd_hook "$1" "printf '[source]\\nkind = \"repository\"\\n' >/etc/patchd/patchd.toml.d/40-vm-image.toml"
}

# vm_apt_patchd_hook GOAL [SETUP [AFTER]]: the guest's hook: SETUP, apt's source for
# the served archive, the /var marker on the first boot, then `patchd run` (window
# open) until GOAL (tests/vm/guest/patchd-guest.sh) or its reboot request, its list,
# AFTER, and one more reboot after the goal.
vm_apt_patchd_hook() {
  vm_apt_hook "${2:-}
vma_sources
[ \$VM_BOOT = 1 ] && echo before-switch >/var/lib/vmtest/marker && sync
. /usr/lib/vm/patchd-guest.sh
vmp_start '$VM_REPO_URL' '$(vm_window_now)'
vmp_run '$1' 500 && { vmp_ctl list 2>&1 | sed 's/^/VMTEST: list /'; vmp_end; }
${3:-}"
  echo 1 >"$W/extra-reboots"
  vm_put "$DISK" 4 "$W/extra-reboots" /vm/extra-reboots
}

# vm_apt_guest: what every apt scenario starts with: the release binaries, the guest's
# network, its layout, its (cached) parts, and $DISK assembled from them.
vm_apt_guest() {
  vm_have_patchd || vm_die "release binaries missing (cargo build --release)"
  export VM_NET=1
  vm_apt_layout
  vm_build_apt
  vm_apt_assemble "$DISK"
}

# vm_apt_boot [SECONDS]: boots $DISK until the guest powers off (VM_APT_TIMEOUT, else
# SECONDS, else 600), then shows what the guest reported.
vm_apt_boot() {
  vm_start "$DISK" "$LOG"
  vm_wait_exit "${VM_APT_TIMEOUT:-${1:-600}}" || vm_die "guest did not power off"
  VM_PID=
  vm_show_results
}

# vm_apt_kernel_hook GOAL: vm_apt_patchd_hook with the kernel's view (vma_kernel,
# guest-apt/hook.sh) recorded at every boot before and after patchd, and on the first
# boot the staged snapshot's (slots/b).
vm_apt_kernel_hook() {
  vm_apt_patchd_hook "$1" 'vma_kernel start' \
    'vma_kernel after-patchd; [ $VM_BOOT = 1 ] && [ -d /.btrfs/slots/b ] && vma_kernel staged /.btrfs/slots/b'
}

# vm_apt_kernel_line BOOT TAG: that line of the guest's kernel.log ("" when none).
vm_apt_kernel_line() {
  vm_cat "$DISK" 4 /vm/kernel.log | grep "^boot=$1 slot=[a-z]* $2 " | head -n 1
}

# vm_apt_kernel_sum LINE: the boot-sum of a kernel.log line; vm_apt_kernel_nosum LINE:
# the line without it.
vm_apt_kernel_sum() { echo "$1" | tr ' ' '\n' | sed -n 's/^boot-sum=//p'; }
vm_apt_kernel_nosum() { echo "$1" | sed 's/ boot-sum=[0-9a-f]*//'; }

# vm_apt_assemble DISK: the apt guest's disk (call vm_apt_layout first).
vm_apt_assemble() {
  local disk=$1 p=$VM_CACHE/parts
  rm -f "$disk"
  truncate -s $((DISK_SECTORS * SECTOR)) "$disk"
  sfdisk -q "$disk" >/dev/null <<EOF || vm_die "sfdisk failed"
label: dos
start=$P1_START, size=$P1_SIZE, type=83, bootable
start=$P2_START, size=$P2_SIZE, type=83
start=$P3_START, size=$P3_SIZE, type=83
start=$P4_START, size=$P4_SIZE, type=83
EOF
  dd if="$p/apt-grub.boot" of="$disk" bs=440 count=1 conv=notrunc status=none
  dd if="$p/apt-grub.core" of="$disk" bs=$SECTOR seek=1 conv=notrunc status=none
  vm_put_part "$disk" 1 "$p/apt-boot.img" sparse
  vm_put_part "$disk" 2 "$p/apt-root.img" sparse
  vm_put_part "$disk" 4 "$p/apt-data.img" sparse
}

# vm_apt_serve DIR PACKAGE=VERSION...: DIR/repo becomes the signed archive with these
# versions, served to the guest (VM_REPO_URL).
vm_apt_serve() {
  local dir=$1; shift
  vm_apt_archive "$dir/repo" "$@"
  vm_serve "$dir"
}

# vm_apt_hook BODY: the guest's hook (/vm/onboot.sh): the archive's URL for apt, then BODY.
vm_apt_hook() {
  { echo "VM_REPO_URL=$VM_REPO_URL"; echo ". /usr/lib/vm/apt-hook.sh"; echo "$1"; } >"$W/onboot.sh"
  vm_put "$DISK" 4 "$W/onboot.sh" /vm/onboot.sh
}

# vm_apt_boots: the guest's boots.log (slot, packages, /var marker of every boot).
vm_apt_boots() { vm_cat "$DISK" 4 /vm/boots.log; }
