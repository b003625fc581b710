# The real daemon, boot failure: from v2 committed on b, the host publishes v4, whose
# root has no init. patchd stages it into a, arms GRUB's try-once counter and reboots;
# the kernel panics (panic=1 resets), GRUB's counter alone brings the machine back to b
# (v2) with no help from userspace, and patchd reports RolledBack with the reason.
scenario() {
  vm_have_patchd || fail "release binaries missing (cargo build --release)"
  export VM_NET=1
  vm_use_state v2
  vm_cat "$DISK" 4 /vm/boots.log >"$W/boots-before"
  vm_publish "$W" v4
  vm_serve "$W"
  vm_daemon_hook 'state=rolled_back booted=b current=2.0.0' 0
  : >"$W/empty"; vm_put "$DISK" 4 "$W/empty" /vm/report.log
  vm_start "$DISK" "$LOG"
  vm_wait_exit "${VM_DAEMON_TIMEOUT:-1500}" || fail "guest did not power off"
  VM_PID=
  vm_show_results
  grep -q 'patchd: booting slot a' "$LOG" || fail "GRUB never tried slot a"
  grep -q 'Kernel panic' "$LOG" || fail "v4 did not panic"
  local n; n=$(wc -l <"$W/boots-before")
  assert_eq "boots reaching userspace" \
    "$(vm_cat "$DISK" 4 /vm/boots.log | tail -n +$((n + 1)) | cut -d' ' -f2-)" \
    "slot=b release=v2
slot=b release=v2"
  vm_assert_report 1 "boot=$((n + 1)) slot=b release=v2 reboot-requested state=switching booted=b current=2.0.0 staged=4.0.0"
  vm_assert_report 2 "boot=$((n + 2)) slot=b release=v2 goal state=rolled_back booted=b current=2.0.0 staged=null"
  local state; state=$(vm_cat "$DISK" 4 /state.json)
  echo "$state" | grep -q 'did not boot' || fail "RolledBack without the reason 'new slot did not boot'"
  grep -q 'VMTEST: audit verify ok' "$LOG" || fail "audit verify did not pass in the guest"
  local env; env=$(vm_grubenv "$DISK" list)
  echo "$env" | grep -qx 'patchd_a_left=0' || fail "a's try-once counter was not spent"
  echo "$env" | grep -qx 'patchd_b_ok=1' || fail "b is no longer the committed slot"
}
