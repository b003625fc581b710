# vm: root
# patchd's own switch, verdict and commit for a btrfs subvolume slot, booted by real
# GRUB: the apt guest (v1 on slot a, subvolume slots/a) runs the real `patchd run` with
# the image source (a drop-in sets [source] kind = "repository"); the host publishes the
# same root upgraded to v2 as a tar release (patchpub --format tar). patchd extracts it
# into a fresh subvolume slots/b, switches in the window (GRUB's try-once counter), and
# on b — GRUB reads b's own kernel, the initramfs mounts subvol=slots/b — the health
# check passes and patchd commits. After one more reboot b still runs, with v2 of the
# packages, and the shared /var kept the marker written before the switch. This is the
# boot path an apt patch set's snapshot slot takes once patchd can stage one.
scenario() {
  vm_apt_guest
  vm_repo_setup "$W"
  vm_apt_publish_image "$W" v2
  vm_serve "$W"
  vm_apt_image_hook 'state=committed booted=b current=2.0.0'
  vm_apt_boot 900
  assert_eq "boots" "$(vm_apt_boots)" "boot=1 slot=a pkgs=vm-probe=1.0-1,vm-tool=1.0-1 var=none
boot=2 slot=b pkgs=vm-probe=1.0-2,vm-tool=1.0-2 var=before-switch
boot=3 slot=b pkgs=vm-probe=1.0-2,vm-tool=1.0-2 var=before-switch"
  vm_assert_report 1 'boot=1 slot=a release=apt reboot-requested state=switching booted=a current=1.0.0 staged=2.0.0'
  vm_assert_report 2 'boot=2 slot=b release=apt-image-v2 goal state=committed booted=b current=2.0.0 staged=null'
  vm_assert_report 3 'boot=3 slot=b release=apt-image-v2 goal state=committed booted=b current=2.0.0 staged=null'
  vm_clean <"$LOG" | grep >/dev/null '^patchd: trying slot b' || fail "GRUB did not try b"
  grep -q 'VMTEST: audit verify ok' "$LOG" || fail "audit verify did not pass in the guest"
  local env; env=$(vm_grubenv "$DISK" list)
  echo "$env" | grep >/dev/null -x 'patchd_b_ok=1' || fail "b not committed in GRUB's environment"
}
