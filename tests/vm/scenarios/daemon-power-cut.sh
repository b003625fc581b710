# The real daemon under power cuts: v1 runs on a, v2 is published. The host cuts power
# (kills qemu) at seeded points during patchd's own staging (VM_CUTS, default 10; the
# points are progress markers the guest prints, so they stay spread however loaded the
# host is), then at the bootloader switch, then during the first boot of slot b. After
# every cut the machine boots a good release (v1 on a or v2 on b) and patchd resumes.
# The device is configured with `[boot] attempts = 2`: the cut during b's first boot
# spends one of GRUB's two tries, the next boot tries b again, the health checks pass
# and the same release (2.0.0) commits, with no republishing. (With patchd's default of
# one try, such a cut rolls the release back for good.)
# VM_SEED replays a run (it is printed first). `tests/vm/vm run --cuts N --seed S
# daemon-power-cut` (VM_SOAK=1) is the soak mode below instead.
scenario() {
  vm_have_patchd || fail "release binaries missing (cargo build --release)"
  if [ "${VM_SOAK:-0}" = 1 ]; then soak; return; fi
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

# --- soak mode -----------------------------------------------------------------------
# `tests/vm/vm run --cuts N --seed S daemon-power-cut` (VM_SOAK=1): N power cuts spread
# over every phase of repeated updates, each release staged into the slot the machine
# does not run: staging (the write and its read-back), the switch (patchd arming GRUB),
# GRUB's own environment write (its save_env spending a try, cut at the snippet's
# "patchd: trying slot" line printed right before it), the first boot (kernel, init),
# the health checks and the commit. After every cut the machine must boot on: every boot
# that reaches userspace runs the release its slot is known to hold (never a half-written
# one), no run may hang at GRUB (its wait fails), and each update must end committed (or
# rolled back, also a known-good end). Releases after v2
# are v2's image with another name in /etc/vm-release (r3, r4, …), so every boot says
# which release it runs. A table at the end says where the cuts landed; the landing is
# read from what the cut left on the disk (GRUB's counters as GRUB reads them, patchd's
# state.json as Linux mounts it), not from the intent.
soak() {
  local seed=${VM_SEED:-$(( $(date +%s) % 32768 ))} cuts=${VM_CUTS:-50}
  echo "soak: seed=$seed cuts=$cuts (replay: tests/vm/vm run --cuts $cuts --seed $seed daemon-power-cut)"
  vm_log "daemon-power-cut soak: seed $seed, $cuts cuts"
  RANDOM=$seed
  # Every cut after GRUB took a try spends one; six leave room for the four a cycle may
  # spend (GRUB's write, first boot, health checks, commit) and a boot that commits.
  export VM_NET=1 VM_BOOT_ATTEMPTS=6
  export VM_SERVE_RATE=${VM_SERVE_RATE:-3000000}
  local p=$VM_CACHE/parts
  vm_assemble "$DISK" v1 -
  vm_repo_setup "$W"
  vm_serve "$W"
  echo on >"$W/flag"; vm_put "$DISK" 4 "$W/flag" /vm/progress
  declare -A content=([a]=v1 [b]=none)
  local committed=a cycle=0 ncut=0 runs=0 seen=0 T rel ver img i k log
  : >"$W/tally"
  soak_start() {
    runs=$((runs + 1))
    log=$W/console-run$runs.log
    vm_start "$DISK" "$log"
  }
  # soak_env VAR: a variable of GRUB's environment as GRUB will read it.
  soak_env() { vm_grubenv "$DISK" list | sed -n "s/^$1=//p"; }
  soak_state() {
    vm_cat "$DISK" 4 /state.json | tr -d ' \n' | sed -n 's/.*"lifecycle":{"state":"\([a-z_]*\)".*/\1/p'
  }
  # soak_check: the boots since the last check ran what their slot holds.
  soak_check() {
    local b s r n=0
    while read -r b s r; do
      n=$((n + 1))
      [ "$n" -gt "$seen" ] || continue
      s=${s#slot=} r=${r#release=}
      [ "$r" = "${content[$s]}" ] || fail "boot $b ran '$r' from slot $s, which holds ${content[$s]} (run $runs)"
    done < <(vm_cat "$DISK" 4 /vm/boots.log)
    seen=$n
  }
  # soak_cut PHASE DETAIL: power off now, record where the cut landed.
  soak_cut() {
    vm_kill; VM_PID=
    ncut=$((ncut + 1))
    local st; st=$(soak_state)
    printf '%s\t%s\tstate=%s\n' "$1" "$2" "$st" >>"$W/tally"
    echo "cut $ncut/$cuts (run $runs, cycle $cycle): $1 ($2), patchd state $st"
  }
  # soak_wait PATTERN [TIMEOUT]: the pattern on this run's console; 1 when the guest
  # finished (powered off) first.
  soak_wait() {
    vm_wait_console "$log" "$1" "${2:-900}" && return 0
    kill -0 "$VM_PID" 2>/dev/null && [ -z "${2:-}" ] && fail "run $runs: no '$1' on the console after 900 s"
    return 1
  }
  # soak_done: after a run that got no cut (the guest reached its goal and powered off).
  soak_done() { if [ -n "${VM_PID:-}" ]; then wait "$VM_PID" 2>/dev/null || true; VM_PID=; fi; }

  while [ "$ncut" -lt "$cuts" ]; do
    cycle=$((cycle + 1))
    if [ "$committed" = a ]; then T=b; else T=a; fi
    ver=$((cycle + 1)).0.0
    if [ "$cycle" = 1 ]; then
      rel=v2 img=$p/root-v2.img
    else
      rel=r$((cycle + 1)) img=$W/root-$rel.img
      cp --sparse=always "$p/root-v2.img" "$img"
      echo "$rel" >"$W/release"
      debugfs -w -f - "$img" >/dev/null 2>&1 <<EOF
rm /etc/vm-release
write $W/release /etc/vm-release
EOF
      debugfs -R 'cat /etc/vm-release' "$img" 2>/dev/null | grep -qx "$rel" || fail "could not name the image $rel"
    fi
    vm_publish "$W" "$rel" "$ver" "$img"
    # From now on T holds the new release or a half-written copy of it: a boot of T may
    # only ever show the new release.
    content[$T]=$rel
    echo "cycle $cycle: $rel ($ver) into slot $T, slot $committed committed"

    # Staging, window closed (patchd stages but does not switch): 1 to 3 cuts.
    VM_WINDOW=$(vm_window_closed) vm_daemon_hook 'state=staged' 0
    k=$(( 1 + RANDOM % 3 ))
    for i in $(seq "$k"); do
      [ "$ncut" -lt "$cuts" ] || break
      local pct=$(( RANDOM % 100 )) extra=$(( RANDOM % 1000 )) ph
      soak_start
      vm_wait_progress "$log" "resume write readback" write "$pct" 900 || true
      if ! kill -0 "$VM_PID" 2>/dev/null; then VM_PID=; soak_check; break; fi
      vm_wait_console "$log" 'VMTEST: state staged' "${extra}ms" || true
      ph=$(grep -aE 'VMTEST: (progress|state staged)' "$log" | tail -n 1 | vm_clean | sed 's/.*VMTEST: //; s/ state=.*//' || true)
      vm_kill; VM_PID=
      soak_cut staging "${ph:-before the first marker}"
      soak_check
    done

    # The switch: window open; cut when patchd logs it (try_slot is next). From here on a
    # run that gets no cut ends with the update (its goal).
    vm_daemon_hook 'state=(committed|rolled_back) ' 0
    local left_before
    if [ "$ncut" -lt "$cuts" ]; then
      soak_start
      if soak_wait 'patchd-log: .*event="switching"|patchd: trying slot'; then
        if grep -aq 'patchd: trying slot' "$log"; then
          soak_cut switch "landed at GRUB's next choice"
        else
          vm_kill; VM_PID=
          soak_cut switch "$T armed: $(soak_env "patchd_${T}_left") tries"
        fi
      fi
      soak_done; soak_check
    fi

    # GRUB's environment write: cut at the line printed right before its save_env.
    if [ "$ncut" -lt "$cuts" ]; then
      left_before=$(soak_env "patchd_${T}_left")
      soak_start
      if soak_wait "patchd: trying slot $T"; then
        local left; vm_kill; VM_PID=
        left=$(soak_env "patchd_${T}_left")
        if [ "$left" = "$left_before" ]; then
          soak_cut grub-env "before save_env completed (${T}_left still $left)"
        else
          soak_cut grub-env "after save_env (${T}_left $left_before -> $left)"
        fi
      fi
      soak_done; soak_check
    fi

    # First boot: GRUB chose a slot; up to 3 s later (kernel, initramfs, init).
    if [ "$ncut" -lt "$cuts" ]; then
      soak_start
      if soak_wait "patchd: booting slot [ab]"; then
        local ms=$(( RANDOM % 3000 )) on
        on=$(grep -ao 'patchd: booting slot [ab]' "$log" | tail -n 1 | sed 's/.* //')
        soak_wait 'VMTEST: patchd started' "${ms}ms" || true
        if grep -aq 'VMTEST: booted' "$log"; then
          soak_cut first-boot "+${ms}ms, slot $on, in userspace"
        else
          soak_cut first-boot "+${ms}ms, slot $on, kernel or initramfs"
        fi
      fi
      soak_done; soak_check
    fi

    # Health checks and commit: up to 2 s after patchd started on T (its checks and the
    # commit take well under a second there; its log reaches the console late).
    if [ "$ncut" -lt "$cuts" ]; then
      soak_start
      if soak_wait 'VMTEST: patchd started'; then
        local ms=$(( RANDOM % 2000 )) ok
        soak_wait 'VMTEST: report' "${ms}ms" || true
        vm_kill; VM_PID=
        ok=$(soak_env "patchd_${T}_ok")
        case $(soak_state) in
          switching) soak_cut health "+${ms}ms, before patchd recorded the boot" ;;
          verifying) if [ "$ok" = 1 ]; then soak_cut commit "+${ms}ms, GRUB committed, state not yet"
                     else soak_cut health "+${ms}ms, checks running"; fi ;;
          *) soak_cut commit "+${ms}ms, after the commit (GRUB ${T}_ok=$ok)" ;;
        esac
      fi
      soak_done; soak_check
    fi

    # No cut: the update ends. Committed on T, or rolled back to the committed slot.
    soak_start
    vm_wait_exit "${VM_DAEMON_TIMEOUT:-1500}" || fail "cycle $cycle: the last run did not power off"
    VM_PID=; soak_check
    local st; st=$(soak_state)
    case $st in
      committed)
        [ "$(soak_env "patchd_${T}_ok")" = 1 ] || fail "cycle $cycle: patchd committed but GRUB has not"
        committed=$T ;;
      rolled_back) echo "cycle $cycle: $ver rolled back (a known-good end)" ;;
      *) fail "cycle $cycle: the update ended in state '$st'" ;;
    esac
    echo "cycle $cycle: $ver ended $st; slot $committed committed"
  done

  echo
  echo "where the $ncut cuts landed (seed $seed, $cycle update cycles, $runs runs):"
  printf '%-11s %5s  %s\n' phase cuts "landed (what the cut left on the disk)"
  local ph
  for ph in staging switch grub-env first-boot health commit; do
    printf '%-11s %5s  %s\n' "$ph" "$(awk -F'\t' -v p="$ph" '$1 == p' "$W/tally" | wc -l)" \
      "$(awk -F'\t' -v p="$ph" '$1 == p { sub(/^[+][0-9]+ms, /, "", $2); sub(/ [0-9]+%$/, "", $2); print $2 }' "$W/tally" |
        sort | uniq -c | sed 's/^ *\([0-9]*\) /\1x /' | paste -sd ';' -)"
  done
  echo "every cut ended on a bootable slot running the release it holds; $cycle updates ended committed or rolled back"
  grep -q 'VMTEST: audit verify ok' "$log" || fail "audit verify did not pass in the guest"
}
