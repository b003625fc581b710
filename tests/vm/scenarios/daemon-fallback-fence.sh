# The real daemon, the fallback fence (issue 15 item 1): from v2 committed on b, slot a
# (v1) is still GRUB's committed fallback (order "b a", a_ok=1). The host publishes v3;
# patchd stages it into a and the power is cut in the middle of the write. Slot a is
# then half-written: before its first byte, patchd must have taken it out of GRUB's
# order, so that when b later fails to boot GRUB finds nothing to boot rather than the
# half-written a.
#
# How b fails: b is put on trial with one try left (b_ok=0, b_left=1) and its root
# replaced by v4 (no /sbin/init). GRUB spends the try (save_env), the kernel panics,
# panic=1 resets, and GRUB walks the order again with b exhausted — the real boot
# counter and the real fallback walk of the shipped snippet, not only an environment
# that says "exhausted". Without the fence GRUB would pick a there (order "b a", a_ok=1).
# With it, the snippet stops at its menu ("no bootable slot"), which the host sees and
# ends. Then b gets v2 and its committed flag back; v2 runs, patchd resumes the staging
# of 3.0.0 (from its last checkpoint; the window is closed, so it stages but never
# switches) and a stays out of GRUB's order after the verified staging too, until a
# switch puts it on trial.
scenario() {
  vm_have_patchd || fail "release binaries missing (cargo build --release)"
  export VM_NET=1
  # Throttled as in daemon-power-cut, so the write lasts several progress markers.
  export VM_SERVE_RATE=${VM_SERVE_RATE:-3000000}
  local pct=${VM_FENCE_CUT_PCT:-40} p=$VM_CACHE/parts env line n
  vm_use_state v2
  vm_cat "$DISK" 4 /vm/boots.log >"$W/boots-before"
  n=$(wc -l <"$W/boots-before")
  local fenced_before; fenced_before=$(vm_audit_events "$DISK" | grep -c '^slot_fenced$' || true)
  env=$(vm_grubenv "$DISK" list)
  echo "--- grubenv at the start"; echo "$env"
  # The premise: a is GRUB's committed fallback before staging starts.
  echo "$env" | grep -qx 'patchd_a_ok=1' || fail "a is not a committed fallback at the start"
  echo "$env" | grep -x 'patchd_order=.*' | grep -qw a || fail "a is not in GRUB's order at the start"
  # What a holds now (v1 as daemon-good-update left it; the cached parts may have been
  # rebuilt since, so compare with the disk itself).
  vm_get_part "$DISK" 2 "$W/a-before.img"
  vm_publish "$W" v3
  vm_serve "$W"
  echo on >"$W/flag"; vm_put "$DISK" 4 "$W/flag" /vm/progress
  VM_WINDOW=$(vm_window_closed) vm_daemon_hook 'state=staged booted=b current=2.0.0' 0
  : >"$W/empty"; vm_put "$DISK" 4 "$W/empty" /vm/report.log

  # 1. Power cut in the middle of the write into a.
  local log1=$W/console-run1.log
  vm_start "$DISK" "$log1"
  # The read-back follows the writer (pipelined), so the guest's marker names either
  # phase while bytes are written; both count how far the write got.
  local deadline=$(( $(vm_now_us) + 1200000000 )) got=-1
  while [ "$got" -lt "$pct" ]; do
    kill -0 "$VM_PID" 2>/dev/null || fail "the guest stopped before the write got to $pct%"
    [ "$(vm_now_us)" -lt "$deadline" ] || fail "no write progress into a"
    line=$(grep -aE 'VMTEST: (progress|state staged)' "$log1" | tail -n 1 | vm_clean || true)
    case $line in
      *"VMTEST: progress write "*|*"VMTEST: progress readback "*)
        got=${line#*VMTEST: progress * }; got=${got%%%*} ;;
      *"state staged"*) got=100 ;;
    esac
    [ "$got" -ge "$pct" ] || sleep 0.05
  done
  vm_kill; VM_PID=
  line=$(grep -aE 'VMTEST: (progress|state)' "$log1" | vm_clean | tail -n 1)
  echo "cut at: $line"
  case $line in
    *"progress write "*|*"progress readback "*) ;;
    *) fail "the cut missed the write (last marker: $line); slow the mirror (VM_SERVE_RATE)" ;;
  esac
  # Half-written: no longer v1, not yet v3.
  vm_get_part "$DISK" 2 "$W/a.img"
  if cmp -s "$W/a.img" "$W/a-before.img"; then
    fail "slot a still holds v1 byte for byte: the cut landed before the write"
  fi
  if cmp -s -n "$(stat -c %s "$p/root-v3.img")" "$W/a.img" "$p/root-v3.img"; then
    fail "slot a holds all of v3: the cut landed after the write"
  fi
  rm -f "$W/a.img" "$W/a-before.img"
  echo "slot a is half-written (neither v1 nor v3)"
  vm_cat "$DISK" 4 /slots/a.json | grep -q '"state": *"incomplete"' ||
    fail "patchd's record of slot a is not incomplete after the cut: $(vm_cat "$DISK" 4 /slots/a.json)"
  # GRUB's environment as GRUB will read it at the next boot (the boot partition without
  # journal replay: GRUB replays none) and with GRUB's own tool: a is out of the order,
  # not committed and has no attempts (the snippet skips such a slot). patchd's fence is
  # a rename on ext4; fsync'd, it was only in the journal when the power went, and GRUB
  # still found `patchd_order=b a patchd_a_ok=1` until patchd added a syncfs.
  env=$(vm_grubenv "$DISK" list)
  echo "--- grubenv after the cut"; echo "$env"
  echo "$env" | grep -x 'patchd_order=.*' | grep -qw a && fail "a is still in GRUB's order after the cut"
  echo "$env" | grep -qx 'patchd_a_ok=1' && fail "a is still committed in GRUB after the cut"
  if echo "$env" | grep -q '^patchd_a_left=' && ! echo "$env" | grep -qx 'patchd_a_left=0'; then
    fail "a has attempts left after the cut"
  fi
  echo "$env" | grep -qx 'patchd_b_ok=1' || fail "b is not committed after the cut"
  [ "$(vm_audit_events "$DISK" | grep -c '^slot_fenced$' || true)" -gt "$fenced_before" ] ||
    fail "no slot_fenced record in patchd's audit log"

  # 2. b fails to boot: on trial with its last try, and a root whose kernel panics.
  vm_get_part "$DISK" 3 "$W/b-v2.img"
  vm_put_part "$DISK" 3 "$p/root-v4.img"
  vm_grubenv "$DISK" set patchd_b_ok=0 patchd_b_left=1
  local log2=$W/console-run2.log
  vm_start "$DISK" "$log2"
  vm_wait_console "$log2" 'Kernel panic' 900 || fail "b (v4) did not panic"
  # After the reset GRUB decides again: either nothing is bootable (it says so and waits
  # at its menu forever), or it boots something, which can only be a here.
  vm_wait_console "$log2" 'patchd: no bootable slot|patchd: booting slot a' 900 ||
    fail "GRUB did not decide after b's failed boot"
  # Time for a wrong boot to show (GRUB prints its choice before loading the kernel).
  vm_wait_console "$log2" 'VMTEST: booted' 20 || true
  vm_kill; VM_PID=
  echo "--- GRUB's decisions in run 2"
  vm_clean <"$log2" | grep -ao 'patchd: .*' | tee "$W/grub-run2"
  grep 'booting slot' "$W/grub-run2" | head -n 1 | grep -q "booting slot b (.*b_ok=0 b_left=0)" ||
    fail "b's first boot did not spend its last try: $(grep 'booting slot' "$W/grub-run2" | head -n 1)"
  grep -q 'booting slot a' "$W/grub-run2" && fail "GRUB booted the half-written slot a"
  vm_cat "$DISK" 4 /vm/boots.log | tail -n +$((n + 1)) | grep -q 'slot=a' &&
    fail "the half-written slot a reached userspace"
  grep -q 'no bootable slot in patchd_order="b"' "$W/grub-run2" ||
    fail "GRUB did not stop at 'no bootable slot'"
  vm_grubenv "$DISK" list | grep -qx 'patchd_b_left=0' || fail "GRUB did not save b's spent try"

  # 3. b bootable again (v2, committed): patchd resumes the staging of 3.0.0.
  vm_put_part "$DISK" 3 "$W/b-v2.img"
  rm -f "$W/b-v2.img"
  vm_grubenv "$DISK" set patchd_b_ok=1 patchd_b_left=0
  LOG=$W/console.log
  vm_start "$DISK" "$LOG"
  vm_wait_exit "${VM_DAEMON_TIMEOUT:-1500}" || fail "guest did not power off"
  VM_PID=
  vm_show_results
  assert_eq "boots reaching userspace" \
    "$(vm_cat "$DISK" 4 /vm/boots.log | tail -n +$((n + 1)) | cut -d' ' -f2-)" \
    "slot=b release=v2
slot=b release=v2"
  vm_assert_report 1 "boot=$((n + 2)) slot=b release=v2 goal state=staged booted=b current=2.0.0 staged=3.0.0"
  # Resumed, not abandoned: same release, same slot, from the last durable checkpoint
  # (patchd writes one every 64 MiB of content, so for this smaller image the start).
  grep -aq 'event="reconcile_staging_resumed" release="3.0.0" slot="a"' "$LOG" ||
    fail "patchd did not resume the interrupted staging"
  grep -q 'VMTEST: audit verify ok' "$LOG" || fail "audit verify did not pass in the guest"
  vm_cat "$DISK" 4 /slots/a.json | grep -q '"state": *"verified"' ||
    fail "slot a is not verified after the resumed staging: $(vm_cat "$DISK" 4 /slots/a.json)"
  vm_get_part "$DISK" 2 "$W/a.img"
  cmp -s -n "$(stat -c %s "$p/root-v3.img")" "$W/a.img" "$p/root-v3.img" ||
    fail "slot a does not hold v3 after the resumed staging"
  rm -f "$W/a.img"
  # Verified, but not switched to: still out of GRUB's order until a switch tries it.
  env=$(vm_grubenv "$DISK" list)
  echo "$env" | grep -x 'patchd_order=.*' | grep -qw a && fail "a is back in GRUB's order before any switch"
  echo "$env" | grep -qx 'patchd_a_ok=1' && fail "a is committed in GRUB before any switch"
  echo "$env" | grep -qx 'patchd_b_ok=1' || fail "b is not committed at the end"
  return 0
}
