# vm: root
# The apt guest, a power cut during patchd's staging: boot 1 (v1 on slot a) runs the
# real `patchd run` (apt source) with the window open; the host kills qemu 0–2.5 s after
# patchd's `staging` lifecycle record (the snapshot, then apt-get inside it; VM_SEED
# picks the delay; the cut must land before patchd's switch). Boot 2 must be a,
# untouched: the old versions, a clean `dpkg --audit`, /var's marker, GRUB's order as
# before; then patchd starts (window closed), deletes the partial snapshot the cut left
# and stages the patch set anew (staged, no switch).
scenario() {
  vm_apt_guest
  vm_apt_serve "$W" $VM_APT_V1 $VM_APT_V2
  local seed=${VM_SEED:-$RANDOM}
  echo "seed $seed"
  vm_apt_patchd_hook 'state=committed booted=b'
  vm_start "$DISK" "$LOG"
  vm_wait_console "$LOG" 'lifecycle event="staging"' 400 || fail "patchd never started staging"
  local ms=$(( seed % 2500 ))
  sleep "$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))"
  vm_kill
  VM_PID=
  echo "power cut ${ms} ms after patchd's staging record"
  cp "$LOG" "$W/console-run1.log"
  vm_clean <"$W/console-run1.log" | grep -E 'VMTEST: apt|patchd-log: .*(apt|snapshot|staging)' | tail -n 5 | cut -c1-200
  if grep -qE 'lifecycle event="(staged|switching)"' "$W/console-run1.log"; then
    fail "the cut came after staging: not a cut during staging (seed $seed)"
  fi
  # Boot 2: the running root as the cut left it; then patchd's recovery.
  vm_apt_hook "echo \"VMTEST: dpkg audit [\$(dpkg --audit 2>&1)]\"
echo \"VMTEST: subvolumes after the cut: \$(btrfs subvolume list /.btrfs | awk '{print \$NF}' | tr '\\n' ' ')\"
. /usr/lib/vm/patchd-guest.sh
vmp_start http://127.0.0.1:9/ '$(vm_window_closed)'
vmp_run 'state=staged booted=a' 300
vmp_stop
echo \"VMTEST: slots after patchd started: \$(ls /.btrfs/slots | tr '\\n' ' ')\""
  vm_start "$DISK" "$LOG"
  vm_wait_exit "${VM_APT_TIMEOUT:-400}" || fail "guest did not power off after the cut"
  VM_PID=
  assert_eq "boots" "$(vm_apt_boots)" "boot=1 slot=a pkgs=vm-probe=1.0-1,vm-tool=1.0-1 var=none
boot=2 slot=a pkgs=vm-probe=1.0-1,vm-tool=1.0-1 var=before-switch"
  grep -q 'VMTEST: dpkg audit \[\]' "$LOG" || fail "dpkg --audit of the running root is not clean"
  # A cut after the snapshot was taken leaves it behind: patchd deletes it at start,
  # then stages the patch set anew (window closed: staged, no switch).
  if vm_clean <"$LOG" | grep >/dev/null '^VMTEST: subvolumes after the cut: .*slots/b'; then
    grep -q 'deleted the partial snapshot an interrupted staging left slot=b' "$LOG" ||
      fail "patchd did not delete the partial snapshot the cut left"
  fi
  vm_cat "$DISK" 4 /vm/report.log | grep >/dev/null '^boot=2 slot=a release=apt goal state=staged booted=a current=1.0.0 staged=' ||
    fail "patchd did not stage the patch set again after the cut"
  local env; env=$(vm_grubenv "$DISK" list)
  echo "$env"
  echo "$env" | grep >/dev/null -x 'patchd_order=a' || fail "GRUB's order changed: $(echo "$env" | grep order)"
}
