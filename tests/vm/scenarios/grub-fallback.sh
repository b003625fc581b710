# GRUB falls back by its counter alone: slot b holds a release without /sbin/init (the
# kernel panics and resets), is set to be tried once, and the machine must come back up
# on slot a — as the guest itself reports after booting.
scenario() {
  vm_assemble "$DISK" v1 v4
  vm_grubenv "$DISK" set patchd_order="b a" patchd_a_ok=1 patchd_b_ok=0 patchd_b_left=1
  vm_start "$DISK" "$LOG"
  vm_wait_exit 900 || fail "guest did not power off within 900s"
  grep -q 'Kernel panic' "$LOG" || fail "slot b was not tried (no kernel panic on the console)"
  local boots; boots=$(vm_cat "$DISK" 4 /vm/boots.log)
  echo "guest reported: $boots"
  assert_eq "boots reaching userspace" "$boots" "boot=1 slot=a release=v1"
  local env; env=$(vm_grubenv "$DISK" list)
  echo "grubenv after: $env"
  echo "$env" | grep -qx 'patchd_b_left=0' || fail "b's counter is not exhausted"
}
