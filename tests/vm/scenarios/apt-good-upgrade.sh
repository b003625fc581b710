# vm: root
# The apt guest, a good upgrade: Debian on btrfs runs slot a (subvolume slots/a) with
# v1 of vm-probe and vm-tool; the host serves a signed archive with v2 of both. Boot 1
# (a) writes a marker into the shared /var, runs the real `patchd run` with the apt
# source (its scan must offer the two upgrades as one security patch set), stages the upgrade into a snapshot slot b
# (tests/vm/guest-apt/stage.sh: a shell stand-in for patchd's apt staging, which is not
# built yet) and arms GRUB for one try of b. Boot 2: GRUB boots b's own kernel with
# rootflags=subvol=slots/b, the health check (vm-probe) passes, b is committed. Boot 3
# is b again (committed, uncounted): the new versions run and /var kept the marker.
scenario() {
  vm_have_patchd || fail "release binaries missing (cargo build --release)"
  export VM_NET=1
  vm_apt_layout
  vm_build_apt
  vm_apt_assemble "$DISK"
  vm_apt_serve "$W" $VM_APT_V1 $VM_APT_V2
  vm_apt_hook "vma_sources
case \$VM_BOOT in
  1) echo before-switch >/var/lib/vmtest/marker; sync
     vma_patchd_scan \"$(vm_window_closed)\"
     vma_stage a b vm-probe vm-tool && vma_try b a && action=reboot ;;
  2) vma_health && vma_commit b && action=reboot ;;
esac"
  vm_start "$DISK" "$LOG"
  vm_wait_exit "${VM_APT_TIMEOUT:-600}" || fail "guest did not power off"
  VM_PID=
  vm_apt_boots
  assert_eq "boots" "$(vm_apt_boots)" "boot=1 slot=a pkgs=vm-probe=1.0-1,vm-tool=1.0-1 var=none
boot=2 slot=b pkgs=vm-probe=1.0-2,vm-tool=1.0-2 var=before-switch
boot=3 slot=b pkgs=vm-probe=1.0-2,vm-tool=1.0-2 var=before-switch"
  # The real patchd (apt source) in the guest: its scan offers the archive's upgrades as
  # one security patch set; its staging step is the piece not built yet (when it is,
  # patchd drives the whole upgrade and this stand-in goes).
  vm_clean <"$LOG" | grep -qE '^VMTEST: list +[0-9.]+\+[0-9a-f]{12} +security +medium +CVE-2026-4242 +[0-9-]+ patch set: 2 packages$' ||
    fail "patchd's apt scan in the guest did not offer the patch set"
  grep -q 'VMTEST: status.*is not built yet; nothing was changed' "$LOG" ||
    echo "note: patchd's apt staging no longer says it is not built: drive the upgrade through patchd"
  vm_clean <"$LOG" | grep -q '^patchd: trying slot b, 0 attempt(s) left' || fail "GRUB did not try b once"
  grep -q 'VMTEST: health 10-vm-probe rc=0' "$LOG" || fail "the health check did not pass on b"
  local env; env=$(vm_grubenv "$DISK" list)
  echo "$env"
  echo "$env" | grep -qx 'patchd_b_ok=1' || fail "b not committed in GRUB's environment"
  echo "$env" | grep -qx 'patchd_a_ok=1' || fail "a is no longer GRUB's fallback"
}
