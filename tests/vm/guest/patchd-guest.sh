# Sourced by a scenario's /vm/onboot.sh (from the data partition) in the busybox guest:
# runs the real `patchd run` and reports what it says over D-Bus (`patchctl`).
#
# The busybox guest has neither systemd nor a system bus, so a private dbus-daemon
# carries patchd's D-Bus service (auth uids:0 instead of polkit), and this script plays
# systemd's part in a reboot: patchd asks systemd over D-Bus (which fails here) after it
# persisted its state, armed GRUB and logged "rebooting"; we then stop it as systemd
# would (SIGTERM) and reboot.
VMP_BUS=unix:path=/run/vm-bus
VMP_LOG=/run/patchd.log
VMP_REPORT=/var/lib/patchd/vm/report.log

vmp_ctl() { patchctl --bus-address "$VMP_BUS" "$@"; }

# vmp_field JSON NAME [DEPTH]: "NAME": value of patchctl's pretty JSON at nesting DEPTH
# (1 = top level, the default; 2 = inside an object such as "progress"); strings
# unquoted, numbers and null as they are.
vmp_field() {
  ind=$(printf '%*s' $((2 * ${3:-1})) '')
  printf '%s\n' "$1" | grep "^$ind\"$2\": " | head -n 1 |
    sed -e 's/^[^:]*: *//' -e 's/,$//' -e 's/^"//' -e 's/"$//'
}

# vmp_start URL WINDOW [ATTEMPTS]: repository URL, maintenance window and (when given)
# GRUB's boots per trial as a config drop-in, the boot partition where GRUB's
# environment lives, the bus, then the daemon.
vmp_start() {
  mount /dev/vda1 /boot/grub-part || echo "VMTEST: cannot mount the boot partition"
  cat >/etc/patchd/patchd.toml.d/50-vm.toml <<EOT
[repository]
url = "$1"

[policy]
windows = ["$2"]
EOT
  if [ -n "${3:-}" ]; then printf '\n[boot]\nattempts = %s\n' "$3" >>/etc/patchd/patchd.toml.d/50-vm.toml; fi
  dbus-daemon --config-file=/usr/lib/vm/bus.conf --nofork --nopidfile >/dev/null 2>&1 &
  i=0
  while [ ! -S /run/vm-bus ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
  NO_COLOR=1 PATCHD_LOG=info patchd --bus-address "$VMP_BUS" --auth uids:0 run >"$VMP_LOG" 2>&1 &
  VMP_PID=$!
  # patchd's log on the console, prefixed (the host watches for its lines).
  (tail -f "$VMP_LOG" 2>/dev/null | while IFS= read -r l; do echo "patchd-log: $l"; done) &
  VMP_TAIL=$!
  echo "VMTEST: patchd started (pid $VMP_PID)"
  vmp_progress
}

# vmp_report TAG: one line with the daemon's view, on the console and the data partition.
vmp_report() {
  st=$(vmp_ctl --json status 2>/dev/null)
  line="boot=$VM_BOOT slot=$VM_SLOT release=$VM_RELEASE $1 state=$(vmp_field "$st" state)"
  line="$line booted=$(vmp_field "$st" booted_slot) current=$(vmp_field "$st" current_version)"
  line="$line staged=$(vmp_field "$st" staged_version)"
  echo "VMTEST: report $line"
  echo "$line" >>"$VMP_REPORT"
  err=$(vmp_field "$st" last_error)
  if [ -n "$err" ] && [ "$err" != null ]; then echo "VMTEST: last_error $err"; fi
}

# vmp_stop: stop patchd as systemd would (SIGTERM, then wait), keep its log.
vmp_stop() {
  kill -TERM "$VMP_PID" 2>/dev/null
  i=0
  while kill -0 "$VMP_PID" 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
  kill "$VMP_TAIL" 2>/dev/null
  [ -n "${VMP_PROGRESS:-}" ] && kill "$VMP_PROGRESS" 2>/dev/null
  cp "$VMP_LOG" "/var/lib/patchd/vm/patchd-boot$VM_BOOT.log"
  sync
}

# vmp_progress: while /vm/progress exists (power-cut scenarios), one console line per
# second with the running job's phase and bytes: the host cuts power at these markers,
# which keeps the cut points spread over staging however loaded the host is.
vmp_progress() {
  [ -f /var/lib/patchd/vm/progress ] || return 0
  (
    while :; do
      st=$(vmp_ctl --json status 2>/dev/null)
      ph=$(vmp_field "$st" phase 2 | tr " " -)
      if [ -n "$ph" ]; then
        d=$(vmp_field "$st" done 2)
        t=$(vmp_field "$st" total 2)
        pct=0
        [ "${t:-0}" -gt 0 ] && pct=$((d * 100 / t))
        echo "VMTEST: progress $ph $pct% state=$(vmp_field "$st" state)"
      fi
      sleep 1
    done
  ) &
  VMP_PROGRESS=$!
}

# vmp_run GOAL TIMEOUT: waits until patchd asks for a reboot (then stops it, sets
# action=reboot and returns 2), or until its status matches the extended regexp GOAL on
# "state=S booted=B current=V" with no job running (reports it and returns 0, patchd
# still running), or TIMEOUT seconds pass (returns 1).
vmp_run() {
  goal=$1 deadline=$(( $(cut -d. -f1 /proc/uptime) + $2 ))
  while :; do
    if grep -q ' rebooting' "$VMP_LOG"; then
      vmp_report reboot-requested
      vmp_stop
      action=reboot
      return 2
    fi
    st=$(vmp_ctl --json status 2>/dev/null)
    s1=$(vmp_field "$st" state)
    # Each lifecycle state once on the console: the host cuts power at these markers too.
    if [ -n "$s1" ] && [ "$s1" != "${vmp_last:-}" ]; then echo "VMTEST: state $s1"; vmp_last=$s1; fi
    now="state=$s1 booted=$(vmp_field "$st" booted_slot) current=$(vmp_field "$st" current_version)"
    if [ "$(vmp_field "$st" progress)" = null ] && echo "$now" | grep -qE "$goal"; then
      vmp_report goal
      return 0
    fi
    if [ "$(cut -d. -f1 /proc/uptime)" -ge "$deadline" ]; then
      vmp_report timeout
      vmp_stop
      return 1
    fi
    sleep 2
  done
}

# vmp_end: the audit chain and history as patchd reports them, stop, then power off —
# or reboot while /vm/extra-reboots counts down.
vmp_end() {
  if vmp_ctl audit verify >/dev/null 2>&1; then echo "VMTEST: audit verify ok"
  else echo "VMTEST: audit verify FAILED"; fi
  vmp_ctl history 2>&1 | tail -n 15 | sed 's/^/VMTEST: history /'
  vmp_stop
  n=$(cat /var/lib/patchd/vm/extra-reboots 2>/dev/null || echo 0)
  if [ "$n" -gt 0 ]; then
    echo $((n - 1)) >/var/lib/patchd/vm/extra-reboots
    sync
    action=reboot
  fi
}
