# vm: root
# patchd's own rollback of a btrfs subvolume slot, booted by real GRUB: as
# apt-btrfs-switch, but the published root carries vm-probe 1.0-3, whose probe fails.
# patchd stages it into slots/b, switches; on b the health check fails, patchd marks b
# bad and reboots into a by itself; a runs the old versions, patchd reports
# rolled_back, /var kept the marker, the audit log verifies.
scenario() {
  vm_apt_guest
  vm_repo_setup "$W"
  vm_apt_publish_image "$W" v3
  vm_serve "$W"
  vm_apt_image_hook 'state=rolled_back booted=a current=1.0.0'
  vm_apt_boot 900
  assert_eq "boots" "$(vm_apt_boots | head -n 3)" "boot=1 slot=a pkgs=vm-probe=1.0-1,vm-tool=1.0-1 var=none
boot=2 slot=b pkgs=vm-probe=1.0-3,vm-tool=1.0-2 var=before-switch
boot=3 slot=a pkgs=vm-probe=1.0-1,vm-tool=1.0-1 var=before-switch"
  vm_assert_report 1 'boot=1 slot=a release=apt reboot-requested state=switching booted=a current=1.0.0 staged=3.0.0'
  vm_cat "$DISK" 4 /vm/report.log | sed -n 2p | grep >/dev/null "slot=b release=apt-image-v3 reboot-requested state=rolled_back" ||
    fail "v3 on b did not roll back by itself"
  vm_assert_report 3 'boot=3 slot=a release=apt goal state=rolled_back booted=a current=1.0.0 staged=null'
  grep -q 'vm-probe 1.0-3: service does not answer' "$LOG" ||
    vm_cat "$DISK" 4 /state.json | grep >/dev/null 'service does not answer' ||
    fail "the failing health check's output was not reported"
  grep -q 'VMTEST: audit verify ok' "$LOG" || fail "audit verify did not pass in the guest"
  local env; env=$(vm_grubenv "$DISK" list)
  echo "$env" | grep >/dev/null -x 'patchd_a_ok=1' || fail "a is not GRUB's committed slot"
  echo "$env" | grep >/dev/null -x 'patchd_b_ok=1' && fail "b was committed"
  return 0
}
