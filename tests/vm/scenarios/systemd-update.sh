# vm: root
# patchd under systemd as PID 1, as the packaged patchd.service (a minimal Debian from
# debootstrap with our .deb installed; see vm_build_systemd). Boot 1 (sv1 on a): systemd
# runs patchd.service (Type=notify, WatchdogSec in force), patchctl talks to it over the
# system bus with polkit: status, history, hold and release-hold work as root and an
# unprivileged user is refused (exit 3). Then the host publishes v2 (sv2): patchd stages
# it into b, switches inside the window and reboots through systemd (StartUnit
# reboot.target); on b patchd-boot-check.service succeeds once patchd committed,
# boot-complete.target is reached, and patchctl reports the committed 2.0.0.
scenario() {
  vm_have_patchd || fail "release binaries missing (cargo build --release)"
  [ "$(id -u)" = 0 ] || fail "needs root (debootstrap, chroot)"
  local t=$SECONDS
  vm_build_systemd
  echo "systemd parts ready after $((SECONDS - t))s"
  export VM_NET=1
  vm_assemble "$DISK" sv1 - data-sd
  vm_repo_setup "$W"
  vm_serve "$W"
  printf '[repository]\nurl = "%s"\n\n[policy]\nwindows = ["%s"]\n' "$VM_REPO_URL" "$(vm_window_now)" \
    >"$W/50-vm.toml"
  vm_put "$DISK" 4 "$W/50-vm.toml" /vm/50-vm.toml
  t=$SECONDS
  vm_start "$DISK" "$LOG"
  vm_wait_console "$LOG" 'VMTEST: booted boot=1' 900 || fail "boot 1 never reached vm-test.service"
  echo "boot 1 reached userspace after $((SECONDS - t))s"
  vm_wait_console "$LOG" 'VMTEST: dbus checks done' 600 || fail "the D-Bus checks did not finish"
  vm_publish "$W" sv2 2.0.0
  vm_wait_console "$LOG" 'VMTEST: booted boot=2' 1800 || fail "no second boot (patchd did not reboot)"
  echo "boot 2 reached userspace after $((SECONDS - t))s"
  vm_wait_exit "${VM_DAEMON_TIMEOUT:-1200}" || fail "guest did not power off"
  VM_PID=
  echo "guest powered off after $((SECONDS - t))s"
  vm_show_results

  local b1 b2
  b1=$(vm_boot_console "$LOG" 1)
  b2=$(vm_boot_console "$LOG" 2)
  # A here-string, not a pipe: grep -q stops reading at the first match, and under
  # pipefail the writer's SIGPIPE would fail the check at random.
  has() { grep -qE "$2" <<<"$1" || fail "$3 (no '$2' on the console)"; }
  has "$b1" 'VMTEST: booted boot=1 slot=a release=sv1 pid1=systemd' "boot 1 is not sv1 on a under systemd"
  # The packaged unit as systemd runs it.
  has "$b1" 'VMTEST: unit patchd .*Type=notify' "patchd.service is not Type=notify"
  has "$b1" 'VMTEST: unit patchd .*ActiveState=active' "patchd.service not active"
  has "$b1" 'VMTEST: unit patchd .*WatchdogUSec=1min ' "WatchdogSec not in force"
  # patchctl over the system bus, polkit deciding.
  has "$b1" 'VMTEST: patchctl status rc=0' "patchctl status failed"
  has "$b1" 'VMTEST: patchctl history rc=0' "patchctl history failed"
  has "$b1" 'VMTEST: patchctl hold rc=0' "patchctl hold failed as root"
  has "$b1" 'VMTEST: hold listed' "the hold is not in patchctl status"
  has "$b1" 'VMTEST: user status rc=0' "an unprivileged user cannot read the status"
  has "$b1" 'VMTEST: user hold rc=3' "an unprivileged hold was not refused with exit 3"
  has "$b1" 'VMTEST: user release-hold rc=3' "an unprivileged release-hold was not refused with exit 3"
  has "$b1" 'VMTEST: hold still listed' "the unprivileged user removed the hold"
  has "$b1" 'VMTEST: patchctl release-hold rc=0' "release-hold failed as root"
  has "$b1" 'VMTEST: no holds' "the hold is still there after release-hold"
  # The reboot went through systemd: its shutdown, not patchd's kernel fallback.
  # (staged, switching and the reboot request follow within a fraction of a second: the
  # hook's 2-second polls rarely see them, patchd's audit log does.)
  has "$b1" '(System Reboot|reboot\.target|systemd-shutdown)' "no systemd reboot on the console"
  if echo "$b1" | grep -q 'VMTEST: report .* no-reboot'; then fail "patchd did not reboot"; fi
  local events; events=$(vm_audit_events "$DISK")
  echo "$events" | tr '\n' ' ' | grep -qE 'staging staged switching reboot booted_new_slot committed' ||
    fail "audit log lacks staging → committed: $(echo "$events" | tr '\n' ' ')"
  if echo "$events" | grep -qx reboot_fallback; then fail "patchd fell back to reboot(2) under systemd"; fi
  # Boot 2: the verdict through systemd's boot assessment, and the commit.
  has "$b2" 'VMTEST: booted boot=2 slot=b release=sv2 pid1=systemd' "boot 2 is not sv2 on b"
  has "$b2" 'VMTEST: boot-check ActiveState=active Result=success SubState=exited' "patchd-boot-check.service did not succeed"
  has "$b2" 'VMTEST: boot-complete active' "boot-complete.target not reached"
  has "$b2" 'VMTEST: unit patchd .*NRestarts=0 .*up=([6-9][0-9]|[1-9][0-9]{2,})s' \
    "patchd.service restarted or did not run past WatchdogSec"
  has "$b2" 'VMTEST: audit verify ok' "audit verify did not pass in the guest"
  # Health checks in transient systemd scopes: started, gone, and their leftovers killed.
  has "$b2" 'VMTEST: health scopes started [1-9]' "no health check ran in a systemd scope"
  has "$b2" 'VMTEST: health scope fallbacks 0' "patchd ran health checks without a scope under systemd"
  has "$b2" 'VMTEST: health scopes left 0' "a health check scope is still there"
  has "$b2" 'VMTEST: health leftovers 0' "a process the health check left survived it"
  assert_eq "boots" "$(vm_cat "$DISK" 4 /vm/boots.log)" "boot=1 slot=a release=sv1
boot=2 slot=b release=sv2"
  vm_cat "$DISK" 4 /vm/report.log | tail -n 1 | grep -q 'boot=2 slot=b release=sv2 goal state=committed booted=b current=2.0.0' ||
    fail "patchctl status on b does not report the committed 2.0.0"
  vm_grubenv "$DISK" list | grep -qx 'patchd_b_ok=1' || fail "b not committed in GRUB's environment"
}
