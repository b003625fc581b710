# The real daemon under power cuts: v1 runs on a, v2 is published. The host cuts power
# (kills qemu) at seeded points during patchd's own staging (VM_CUTS, default 10; the
# points are progress markers the guest prints, so they stay spread however loaded the
# host is), then at the bootloader switch, then during the first boot of slot b. After
# every cut the machine boots a good release (v1 on a or v2 on b) and patchd resumes.
# The device is configured with `[boot] attempts = 2`: the cut during b's first boot
# spends one of GRUB's two tries, the next boot tries b again, the health checks pass
# and the same release (2.0.0) commits, with no republishing. (With patchd's default of
# one try, such a cut rolls the release back for good.)
# VM_SEED replays a run (it is printed first).
scenario() {
  vm_have_patchd || fail "release binaries missing (cargo build --release)"
  local seed=${VM_SEED:-$(( $(date +%s) % 32768 ))} cuts=${VM_CUTS:-10}
  echo "seed=$seed cuts=$cuts (replay: VM_SEED=$seed tests/vm/vm run daemon-power-cut)"
  vm_log "daemon-power-cut: seed $seed"
  RANDOM=$seed
  export VM_NET=1 VM_BOOT_ATTEMPTS=2
  # The image (23 MB compressed) is served at 3 MB/s so its write phase lasts several
  # of the guest's one-second progress markers on any host; unthrottled, a fast host
  # writes and reads it back in under a second and the cuts land after staging.
  export VM_SERVE_RATE=${VM_SERVE_RATE:-3000000}
  vm_assemble "$DISK" v1 -
  vm_repo_setup "$W"
  vm_publish "$W" v2
  vm_serve "$W"
  echo on >"$W/flag"; vm_put "$DISK" 4 "$W/flag" /vm/progress
  # While cutting staging, the window is closed: patchd stages (staging may run outside
  # windows) but does not switch, so every cut lands in staging or right after it.
  VM_WINDOW=$(vm_window_closed) vm_daemon_hook 'state=committed booted=b current=2.0.0' 0

  local runs=0 log i target ph pct extra t
  # Phases of the staging job in the order patchd reports them (VMTEST: progress lines).
  local phases=${VM_CUT_PHASES:-resume write readback}
  # Seeded cut points, sorted along staging: patchd resumes after each cut, so each
  # run goes a little further (points past the end of staging cut at "staged"). The
  # write phase (the only one the throttle stretches) gets half of the points.
  local targets=() nph
  for i in $(seq "$cuts"); do
    set -- $phases; nph=$#
    t=$(( RANDOM % (nph + 1) )); [ "$t" -lt "$nph" ] || t=$(( nph > 1 ? 1 : 0 ))
    shift "$t"
    targets+=("$t $1 $(( RANDOM % 100 )) $(( RANDOM % 1000 ))")
  done
  mapfile -t targets < <(printf '%s\n' "${targets[@]}" | sort -n -k1,1 -k3,3)
  printf 'cut points (phase index, phase, %%, extra ms):\n'; printf '  %s\n' "${targets[@]}"
  start_run() {
    runs=$((runs + 1)); [ "$runs" -le $((cuts + 10)) ] || fail "too many runs"
    log=$W/console-run$runs.log
    vm_start "$DISK" "$log"
  }
  power_cut() {
    vm_kill; VM_PID=
    echo "cut $1 (run $runs): last markers: $(grep -aE 'VMTEST: (progress|report|booted)|patchd: booting' "$log" |
      tail -n 2 | vm_clean | tr '\n' '|')"
  }
  local in_staging=0
  for i in $(seq "$cuts"); do
    # A phase and a percentage within it, plus up to a second past the marker.
    set -- ${targets[$((i - 1))]}
    ph=$2 pct=$3 extra=$4
    target="$ph $pct%"
    start_run
    vm_wait_progress "$log" "$phases" "$ph" "$pct" 900 || fail "cut $i: no staging progress (wanted $target)"
    vm_wait_console "$log" 'VMTEST: state staged' "${extra}ms" || true
    grep -aq 'VMTEST: state staged' "$log" || in_staging=$((in_staging + 1))
    power_cut "$i at $target+${extra}ms"
  done
  echo "$in_staging of $cuts cuts landed during staging (the others right after it)"
  # Readback is not throttled (local disk): its points may all land after staging.
  # The write points cannot, so fewer than three in staging means the cuts missed.
  local want=$(( cuts < 3 ? cuts : 3 ))
  [ "$in_staging" -ge "$want" ] || fail "only $in_staging of $cuts cuts landed during staging (want $want)"
  # Open the window: at the bootloader switch, when patchd's log shows it.
  vm_daemon_hook 'state=committed booted=b current=2.0.0' 0
  start_run
  # patchd reboots by itself right after the switch (reboot(2): no systemd here), so the
  # cut may land in b's first boot instead; then it is the first-boot cut.
  vm_wait_console "$log" 'patchd-log: .*(switching|try_slot|armed)|patchd: booting slot b' 1200 ||
    fail "switch cut: patchd never switched"
  if grep -aq 'patchd: booting slot b' "$log"; then
    power_cut "at the switch, landed in b's first boot"
  else
    power_cut "at the switch"
    # During the first boot of b: at GRUB's choice (its try is spent then).
    start_run
    vm_wait_console "$log" 'patchd: booting slot b' 1200 || fail "first-boot cut: GRUB never picked b"
    extra=$(( RANDOM % 3000 ))
    vm_wait_console "$log" 'VMTEST: booted' "${extra}ms" || true
    power_cut "in b's first boot (+${extra}ms)"
  fi

  # No more cuts. GRUB has one try of b left: b boots again and patchd commits 2.0.0.
  vm_cat "$DISK" 4 /vm/boots.log >"$W/boots-before"
  LOG=$W/console.log
  vm_start "$DISK" "$LOG"
  vm_wait_exit "${VM_DAEMON_TIMEOUT:-1500}" || fail "final run did not power off"
  VM_PID=
  # GRUB prints the counter after spending the try: 1 left at the cut, 0 now.
  grep -a 'patchd: booting' "$W/console-run$runs.log" | vm_clean | tail -n 1 | grep -q 'booting slot b .*b_left=1)' ||
    fail "the cut boot was not b's first of two tries"
  grep -a 'patchd: booting' "$LOG" | vm_clean | head -n 1 | grep -q 'booting slot b .*b_left=0)' ||
    fail "the next boot was not b's second try: $(grep -a 'patchd: booting' "$LOG" | vm_clean | head -n 1)"
  vm_show_results
  local boots; boots=$(vm_cat "$DISK" 4 /vm/boots.log)
  if echo "$boots" | grep -vE '^boot=[0-9]+ (slot=a release=v1|slot=b release=v2)$'; then
    fail "a boot ran something other than v1 on a or v2 on b"
  fi
  assert_eq "boots after the cuts" \
    "$(echo "$boots" | tail -n +$(( $(wc -l <"$W/boots-before") + 1 )) | cut -d' ' -f2-)" "slot=b release=v2"
  vm_cat "$DISK" 4 /vm/report.log | tail -n 1 | grep -q 'slot=b release=v2 goal state=committed booted=b current=2.0.0' ||
    fail "2.0.0 did not commit on b's second try"
  if vm_cat "$DISK" 4 /state.json | grep -q rolled_back; then fail "2.0.0 was rolled back"; fi
  grep -q 'VMTEST: audit verify ok' "$LOG" || fail "audit verify did not pass in the guest"
  vm_grubenv "$DISK" list | grep -qx 'patchd_b_ok=1' || fail "b not committed in GRUB's environment"
}
