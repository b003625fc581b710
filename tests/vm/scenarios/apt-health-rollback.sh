# vm: root
# The apt guest, an upgrade that fails its health check, driven by the real `patchd
# run` (apt source): from v1 on slot a, the archive offers vm-probe 1.0-3 (its probe
# fails: the service "does not answer") and vm-tool 1.0-2. patchd stages both in a
# snapshot slot b, switches; on b the health check fails, patchd marks b bad and
# reboots into a by itself: the old versions, /var's marker still there, patchd
# reports rolled_back, GRUB's committed slot is still a.
scenario() {
  vm_apt_guest
  vm_apt_serve "$W" $VM_APT_V1 $VM_APT_V3
  vm_apt_patchd_hook 'state=rolled_back booted=a'
  vm_apt_boot
  assert_eq "boots" "$(vm_apt_boots | head -n 3)" "boot=1 slot=a pkgs=vm-probe=1.0-1,vm-tool=1.0-1 var=none
boot=2 slot=b pkgs=vm-probe=1.0-3,vm-tool=1.0-2 var=before-switch
boot=3 slot=a pkgs=vm-probe=1.0-1,vm-tool=1.0-1 var=before-switch"
  local rep; rep=$(vm_cat "$DISK" 4 /vm/report.log)
  echo "$rep" | sed -n 1p | grep >/dev/null "^boot=1 slot=a release=apt reboot-requested state=switching booted=a " ||
    fail "patchd on a did not switch: $(echo "$rep" | sed -n 1p)"
  echo "$rep" | sed -n 2p | grep >/dev/null "^boot=2 slot=b release=apt reboot-requested state=rolled_back " ||
    fail "patchd on b did not roll back by itself: $(echo "$rep" | sed -n 2p)"
  echo "$rep" | sed -n 3p | grep >/dev/null "^boot=3 slot=a release=apt goal state=rolled_back booted=a " ||
    fail "a does not report rolled_back: $(echo "$rep" | sed -n 3p)"
  grep -q 'vm-probe 1.0-3: service does not answer' "$LOG" ||
    vm_cat "$DISK" 4 /state.json | grep >/dev/null 'service does not answer' ||
    fail "the failing health check's output was not reported"
  grep -q 'VMTEST: audit verify ok' "$LOG" || fail "audit verify did not pass in the guest"
  local env; env=$(vm_grubenv "$DISK" list)
  echo "$env" | grep >/dev/null -x 'patchd_a_ok=1' || fail "a is not GRUB's committed slot"
  if echo "$env" | grep >/dev/null -x 'patchd_b_ok=1'; then fail "b was committed"; fi
}
