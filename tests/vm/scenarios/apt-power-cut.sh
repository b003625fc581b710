# vm: root
# The apt guest, a power cut during staging: boot 1 (v1 on slot a) stages the v2
# upgrade into a snapshot (shell stand-in for patchd's apt staging,
# tests/vm/guest-apt/stage.sh); the host kills qemu up to 1 s after apt-get update or
# apt-get install started in the snapshot (VM_SEED picks which and the delay). The next boot must be a, untouched: the old
# versions, a clean `dpkg --audit`, /var's marker, GRUB's environment as before.
scenario() {
  vm_have_patchd || fail "release binaries missing (cargo build --release)"
  export VM_NET=1
  vm_apt_layout
  vm_build_apt
  vm_apt_assemble "$DISK"
  vm_apt_serve "$W" $VM_APT_V1 $VM_APT_V2
  local seed=${VM_SEED:-$RANDOM}
  echo "seed $seed"
  vm_apt_hook 'vma_sources
case $VM_BOOT in
  1) echo before-switch >/var/lib/vmtest/marker; sync
     vma_stage a b vm-probe vm-tool && vma_try b a && action=reboot ;;
  *) echo "VMTEST: dpkg audit [$(dpkg --audit 2>&1)]"
     echo "VMTEST: slots after the cut: $(ls /.btrfs/slots | tr "\n" " ")" ;;
esac'
  vm_start "$DISK" "$LOG"
  # The cut lands in apt-get update or in apt-get install (dpkg unpacking and
  # configuring inside the snapshot), up to a second after it started.
  local phase=update; [ $((seed % 2)) = 1 ] && phase=install
  vm_wait_console "$LOG" "VMTEST: staging apt-get $phase" 400 || fail "staging never reached apt-get $phase"
  local ms=$(( seed / 2 % 1000 ))
  sleep "$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))"
  vm_kill
  VM_PID=
  echo "power cut ${ms} ms after apt-get $phase started"
  cp "$LOG" "$W/console-run1.log"
  ! grep -q 'VMTEST: armed' "$W/console-run1.log" || fail "the cut came after staging (GRUB armed): not a cut during staging"
  vm_start "$DISK" "$LOG"
  vm_wait_exit "${VM_APT_TIMEOUT:-400}" || fail "guest did not power off after the cut"
  VM_PID=
  assert_eq "boots" "$(vm_apt_boots)" "boot=1 slot=a pkgs=vm-probe=1.0-1,vm-tool=1.0-1 var=none
boot=2 slot=a pkgs=vm-probe=1.0-1,vm-tool=1.0-1 var=before-switch"
  grep -q 'VMTEST: dpkg audit \[\]' "$LOG" || fail "dpkg --audit of the running root is not clean"
  local env; env=$(vm_grubenv "$DISK" list)
  echo "$env"
  echo "$env" | grep -qx 'patchd_order=a' || fail "GRUB's order changed: $(echo "$env" | grep order)"
}
