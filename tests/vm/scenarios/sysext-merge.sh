# vm: root
# patchd's sysext installer against the real systemd-sysext of the systemd guest (sv1,
# systemd as PID 1), driven by `patchd sysext` with its device defaults: a directory-tree
# extension (tar) is installed (merged into /usr), upgraded, rolled back to the previous
# copy; extensions whose extension-release names another VERSION_ID or ID are refused
# before activation with the field named, and what is merged does not change; a
# squashfs extension is merged beside it (loop-mounted by systemd); both are removed and
# unmerged. The guest side is tests/vm/guest-sysext/hook.sh, written over this run's
# copy of /usr/lib/vm/hook.sh; overlayfs, loop and squashfs come from the Debian kernel
# package as modules, written into this run's root with a modules-load.d entry.
scenario() {
  vm_have_patchd || fail "release binaries missing (cargo build --release)"
  [ "$(id -u)" = 0 ] || fail "needs root (debootstrap, chroot)"
  command -v mksquashfs >/dev/null || fail "mksquashfs missing (Debian package squashfs-tools)"
  local t=$SECONDS
  vm_build_systemd
  echo "systemd parts ready after $((SECONDS - t))s"
  # A network card, so systemd-networkd-wait-online (patchd.service wants
  # network-online.target) does not hold the boot for its two-minute timeout.
  export VM_NET=1
  vm_assemble "$DISK" sv1 - data-sd

  # The extensions, for the guest's OS (Debian 12) unless named bad.
  local src=$W/src files=$W/data/vm
  mkdir -p "$files"
  ext() { # ext DIR NAME CONTENT RELEASE
    mkdir -p "$1/usr/lib/extension-release.d" "$1/usr/share/$2"
    echo "$3" >"$1/usr/share/$2/version"
    printf '%s\n' "$4" >"$1/usr/lib/extension-release.d/extension-release.$2"
  }
  ext "$src/t1" vmext "tree 1" 'ID=debian
VERSION_ID=12'
  ext "$src/t2" vmext "tree 2" 'ID=debian
VERSION_ID=12'
  ext "$src/tv" vmext "tree bad" 'ID=debian
VERSION_ID=11'
  ext "$src/ti" vmext "tree bad" 'ID=fedora
VERSION_ID=12'
  ext "$src/r1" vmraw "raw 1" 'ID=debian
VERSION_ID=12
SYSEXT_SCOPE=system'
  ext "$src/rv" vmraw "raw bad" 'ID=debian
VERSION_ID=13'
  tar -C "$src/t1" -cf "$files/sx-tree-1.tar" usr
  tar -C "$src/t2" -cf "$files/sx-tree-2.tar" usr
  tar -C "$src/tv" -cf "$files/sx-tree-bad-version.tar" usr
  tar -C "$src/ti" -cf "$files/sx-tree-bad-id.tar" usr
  mksquashfs "$src/r1" "$files/sx-raw-1.raw" -noappend -quiet -all-root >/dev/null
  mksquashfs "$src/rv" "$files/sx-raw-bad.raw" -noappend -quiet -all-root >/dev/null
  vm_guest_modules "$W/mods" sysext-vm overlay loop squashfs
  echo "overlay loop squashfs" >"$files/sx-modules"
  # The modules and the hook onto the root, the extensions onto the data partition.
  install -D -m 755 "$VM_DIR/guest-sysext/hook.sh" "$W/mods/usr/lib/vm/hook.sh"
  vm_part_tree "$DISK" 2 "$W/mods" || fail "could not write the modules and the hook onto the root partition"
  vm_part_tree "$DISK" 4 "$W/data" || fail "could not write the data partition"

  t=$SECONDS
  vm_start "$DISK" "$LOG"
  vm_wait_console "$LOG" 'VMTEST: booted sysext' 900 || fail "the guest never reached vm-test.service"
  echo "guest reached userspace after $((SECONDS - t))s"
  vm_wait_console "$LOG" 'VMTEST: done' 600 || fail "the sysext steps did not finish"
  vm_wait_exit 300 || fail "guest did not power off"
  VM_PID=
  echo "guest done after $((SECONDS - t))s"
  local c; c=$(vm_clean <"$LOG")
  echo "$c" | grep 'VMTEST:' || true
  has() { echo "$c" | grep -qE "$1" || fail "$2 (no '$1' on the console)"; }
  has 'VMTEST: booted sysext pid1=systemd os=debian/12' "not the systemd guest on Debian 12"
  has "VMTEST: filesystems 2 loop yes" "overlayfs, squashfs or loop missing in the guest"
  has 'VMTEST: install1 rc=0' "installing the tree extension failed"
  has 'VMTEST: content1 tree 1' "v1 of the tree extension is not merged into /usr"
  has 'VMTEST: status1 .*/usr vmext' "systemd-sysext status does not show vmext merged"
  has 'VMTEST: install2 rc=0' "the upgrade failed"
  has 'VMTEST: content2 tree 2' "v2 is not merged after the upgrade"
  has 'VMTEST: check-bad rc=1' "patchd sysext check passed an extension for VERSION_ID 11"
  has 'VMTEST: check-bad out: .*VERSION_ID: the extension says "11", this OS "12"' "the check does not name VERSION_ID"
  has 'VMTEST: install-bad rc=1' "an extension for VERSION_ID 11 was installed"
  has 'VMTEST: install-bad out: .*VERSION_ID.*not activated' "the refusal does not say it was not activated"
  has 'VMTEST: install-badid rc=1' "an extension for ID fedora was installed"
  has 'VMTEST: install-badid out: .*ID: the extension says "fedora", this OS "debian"' "the refusal does not name ID"
  has 'VMTEST: content-after-bad tree 2' "a refused extension changed what is merged"
  has 'VMTEST: rollback rc=0' "the rollback failed"
  has 'VMTEST: content-rolled-back tree 1' "the rollback did not bring v1 back"
  has 'VMTEST: raw1 rc=0' "installing the squashfs extension failed"
  has 'VMTEST: raw-content raw 1' "the squashfs extension is not merged"
  has 'VMTEST: raw-bad rc=1' "a squashfs extension for VERSION_ID 13 was installed"
  has 'VMTEST: raw-bad out: .*VERSION_ID: the extension says "13"' "the raw refusal does not name VERSION_ID"
  has 'VMTEST: raw-after-bad raw 1' "a refused raw extension changed what is merged"
  has 'VMTEST: status out: vmext: 1 \(copy a\), previous 2 \(copy b\), merged' "patchd sysext status is wrong for vmext"
  has 'VMTEST: status out: vmraw: 1 \(copy a\), previous none, merged' "patchd sysext status is wrong for vmraw"
  has 'VMTEST: remove1 rc=0' "removing vmext failed"
  has 'VMTEST: removed-vmext missing' "vmext is still merged after its removal"
  has 'VMTEST: remove2 rc=0' "removing vmraw failed"
  has 'VMTEST: removed-vmraw missing' "vmraw is still merged after its removal"
  has 'VMTEST: status-end .*/usr none' "something is still merged into /usr at the end"
}
