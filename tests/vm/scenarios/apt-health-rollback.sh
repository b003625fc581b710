# vm: root
# The apt guest, an upgrade that fails its health check: from v1 on slot a, the archive
# offers vm-probe 1.0-3 (its probe fails: the service "does not answer") and vm-tool
# 1.0-2. Boot 1 stages them into a snapshot slot b (shell stand-in for patchd's apt
# staging, tests/vm/guest-apt/stage.sh) and arms b for one try. Boot 2 runs b with the
# new versions; the health check fails, so b is not committed. GRUB's try-once counter
# alone brings boot 3 back to a: the old versions, /var's marker still there.
scenario() {
  vm_have_patchd || fail "release binaries missing (cargo build --release)"
  export VM_NET=1
  vm_apt_layout
  vm_build_apt
  vm_apt_assemble "$DISK"
  vm_apt_serve "$W" $VM_APT_V1 $VM_APT_V3
  vm_apt_hook 'vma_sources
case $VM_BOOT in
  1) echo before-switch >/var/lib/vmtest/marker; sync
     vma_stage a b vm-probe vm-tool && vma_try b a && action=reboot ;;
  2) if vma_health; then vma_commit b; else echo "VMTEST: health failed on $VM_SLOT"; fi
     action=reboot ;;
esac'
  vm_start "$DISK" "$LOG"
  vm_wait_exit "${VM_APT_TIMEOUT:-600}" || fail "guest did not power off"
  VM_PID=
  assert_eq "boots" "$(vm_apt_boots)" "boot=1 slot=a pkgs=vm-probe=1.0-1,vm-tool=1.0-1 var=none
boot=2 slot=b pkgs=vm-probe=1.0-3,vm-tool=1.0-2 var=before-switch
boot=3 slot=a pkgs=vm-probe=1.0-1,vm-tool=1.0-1 var=before-switch"
  grep -q 'VMTEST: health 10-vm-probe rc=1: vm-probe 1.0-3: service does not answer' "$LOG" ||
    fail "the health check did not fail on b"
  local env; env=$(vm_grubenv "$DISK" list)
  echo "$env"
  echo "$env" | grep -qx 'patchd_b_ok=0' || fail "b was committed"
  echo "$env" | grep -qx 'patchd_b_left=0' || fail "b's try was not counted"
  echo "$env" | grep -qx 'patchd_a_ok=1' || fail "a is not GRUB's committed slot"
}
