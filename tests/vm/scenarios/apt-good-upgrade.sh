# vm: root
# (Pipelines end in `grep >/dev/null`, not `grep -q`: with pipefail, grep -q quitting at
# its first match can fail the pipeline by SIGPIPE on a long console log.)
# The apt guest, a good upgrade, driven by the real `patchd run` with [source] kind =
# "apt": Debian on btrfs runs slot a (subvolume slots/a) with v1 of vm-probe and vm-tool;
# the host serves a signed archive with v2 of both. Boot 1 (a) writes a marker into the
# shared /var; patchd scans (one security patch set of 2 packages), stages it in a
# writable snapshot slots/b (apt-get inside it), switches in the window (GRUB's
# try-once counter) and asks for the reboot. Boot 2: GRUB boots b's own kernel with
# rootflags=subvol=slots/b, the health check (vm-probe) passes, patchd commits. Boot 3
# is b again (committed, uncounted): the new versions run, /var kept the marker.
scenario() {
  vm_apt_guest
  vm_apt_serve "$W" $VM_APT_V1 $VM_APT_V2
  vm_apt_patchd_hook 'state=committed booted=b'
  vm_apt_boot
  assert_eq "boots" "$(vm_apt_boots)" "boot=1 slot=a pkgs=vm-probe=1.0-1,vm-tool=1.0-1 var=none
boot=2 slot=b pkgs=vm-probe=1.0-2,vm-tool=1.0-2 var=before-switch
boot=3 slot=b pkgs=vm-probe=1.0-2,vm-tool=1.0-2 var=before-switch"
  local set='[0-9]{4}\.[0-9]+\.[0-9]+\+[0-9a-f]{12}' rep
  rep=$(vm_cat "$DISK" 4 /vm/report.log)
  echo "$rep" | sed -n 1p | grep >/dev/null -E "^boot=1 slot=a release=apt reboot-requested state=switching booted=a current=.* staged=$set$" ||
    fail "patchd on a did not stage and switch the patch set: $(echo "$rep" | sed -n 1p)"
  echo "$rep" | sed -n 2p | grep >/dev/null -E "^boot=2 slot=b release=apt goal state=committed booted=b current=$set staged=null$" ||
    fail "patchd on b did not commit: $(echo "$rep" | sed -n 2p)"
  local audit; audit=$(vm_cat "$DISK" 4 /audit.log)
  echo "$audit" | grep '"update_available"' | grep >/dev/null 'Security/Medium' ||
    fail "patchd did not offer the patch set as a security release"
  echo "$audit" | grep '"staged"' | grep -F '{"arch":"all","name":"vm-probe","new":"1.0-2","old":"1.0-1"}' |
    grep -qF '{"arch":"all","name":"vm-tool","new":"1.0-2","old":"1.0-1"}' ||
    fail "the staged audit record does not list the package delta"
  echo "$audit" | grep >/dev/null '"event":"etc_carried"' || fail "no /etc carry-over record at the switch"
  vm_clean <"$LOG" | grep >/dev/null '^patchd: trying slot b, 0 attempt(s) left' || fail "GRUB did not try b once"
  grep -q 'VMTEST: audit verify ok' "$LOG" || fail "audit verify did not pass in the guest"
  local env; env=$(vm_grubenv "$DISK" list)
  echo "$env" | grep >/dev/null -x 'patchd_b_ok=1' || fail "b not committed in GRUB's environment"
}
