# The real daemon, health-check failure: from v2 committed on b (the state
# daemon-good-update leaves), the host publishes v3, which boots but whose health check
# fails. patchd stages v3 into a, switches, reboots; on a the check fails, patchd marks
# a bad and goes back; b runs v2 again, patchd reports RolledBack, a new check does not
# offer v3 again (recorded as failed here), and the audit log verifies.
scenario() {
  vm_have_patchd || fail "release binaries missing (cargo build --release)"
  export VM_NET=1
  vm_use_state v2
  vm_cat "$DISK" 4 /vm/boots.log >"$W/boots-before"
  vm_publish "$W" v3
  vm_serve "$W"
  # After the rollback: ask for a new check, which must not stage v3 again.
  VM_HOOK_DEFS='vmp_retry_check() {
  vmp_ctl check >/dev/null 2>&1 || echo "VMTEST: check failed"
  sleep 5
  vmp_run "state=rolled_back booted=b current=2.0.0" 300 || return 1
  vmp_ctl list 2>&1 | sed "s/^/VMTEST: list /"
}' VM_HOOK_AFTER=vmp_retry_check vm_daemon_hook 'state=rolled_back booted=b current=2.0.0' 0
  : >"$W/empty"; vm_put "$DISK" 4 "$W/empty" /vm/report.log
  vm_start "$DISK" "$LOG"
  vm_wait_exit "${VM_DAEMON_TIMEOUT:-1500}" || fail "guest did not power off"
  VM_PID=
  vm_show_results
  local n; n=$(wc -l <"$W/boots-before")
  assert_eq "boots" "$(vm_cat "$DISK" 4 /vm/boots.log | tail -n +$((n + 1)) | cut -d' ' -f2-)" \
    "slot=b release=v2
slot=a release=v3
slot=b release=v2"
  vm_assert_report 1 "boot=$((n + 1)) slot=b release=v2 reboot-requested state=switching booted=b current=2.0.0 staged=3.0.0"
  # On a, the health check fails and patchd asks for the reboot back to b.
  vm_cat "$DISK" 4 /vm/report.log | sed -n 2p | grep -q "slot=a release=v3 reboot-requested state=rolled_back" ||
    fail "v3 on a did not roll back by itself"
  vm_assert_report 3 "boot=$((n + 3)) slot=b release=v2 goal state=rolled_back booted=b current=2.0.0 staged=null"
  vm_assert_report 4 "boot=$((n + 3)) slot=b release=v2 goal state=rolled_back booted=b current=2.0.0 staged=null"
  grep -q 'vm-service: v3 is broken on purpose' "$LOG" ||
    grep -q 'v3 is broken on purpose' <(vm_cat "$DISK" 4 /state.json) ||
    fail "the failing health check's output was not reported"
  grep -q 'VMTEST: audit verify ok' "$LOG" || fail "audit verify did not pass in the guest"
  vm_cat "$DISK" 4 /state.json | grep -q '"3.0.0"' || fail "v3 not recorded in the state"
  local env; env=$(vm_grubenv "$DISK" list)
  echo "$env" | grep -qx 'patchd_b_ok=1' || fail "b is no longer the committed slot"
  echo "$env" | grep -q '^patchd_order=b$' || echo "$env" | grep -q '^patchd_order=b *$' ||
    echo "note: order after rollback: $(echo "$env" | grep order)"
}
