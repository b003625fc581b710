# The real daemon, good update: v1 runs on a; the host publishes v2 (patchpub, served
# over HTTP); the guest's `patchd run` finds it through its TUF client, stages it into
# slot b, switches inside the maintenance window and asks for the reboot; b boots,
# the health checks pass, patchd commits; after one more reboot v2 still runs from b.
scenario() {
  vm_have_patchd || fail "release binaries missing (cargo build --release)"
  export VM_NET=1
  vm_assemble "$DISK" v1 -
  vm_repo_setup "$W"
  vm_publish "$W" v2
  vm_serve "$W"
  vm_daemon_hook 'state=committed booted=b current=2.0.0' 1
  vm_start "$DISK" "$LOG"
  vm_wait_exit "${VM_DAEMON_TIMEOUT:-1500}" || fail "guest did not power off"
  VM_PID=
  vm_show_results
  assert_eq "boots" "$(vm_cat "$DISK" 4 /vm/boots.log)" "boot=1 slot=a release=v1
boot=2 slot=b release=v2
boot=3 slot=b release=v2"
  vm_assert_report 1 'boot=1 slot=a release=v1 reboot-requested state=switching booted=a current=1.0.0 staged=2.0.0'
  vm_assert_report 2 'boot=2 slot=b release=v2 goal state=committed booted=b current=2.0.0 staged=null'
  vm_assert_report 3 'boot=3 slot=b release=v2 goal state=committed booted=b current=2.0.0 staged=null'
  grep -q 'VMTEST: audit verify ok' "$LOG" || fail "audit verify did not pass in the guest"
  local env; env=$(vm_grubenv "$DISK" list)
  echo "$env" | grep -qx 'patchd_b_ok=1' || fail "b not committed in GRUB's environment"
  vm_share_state v2
}
