#!/bin/sh
# Guest side of the systemd scenario (run by vm-test.service after patchd.service, as
# root; its output is on the serial console). Boot 1 (v1 on a): patchd.service's state
# and watchdog as systemd reports them, patchctl over the system bus with polkit (root
# allowed, an unprivileged user refused), then the update: the host publishes v2 when it
# reads "dbus checks done"; patchd stages it and asks systemd to reboot. Later boots:
# wait for the commit, patchd-boot-check.service and boot-complete.target, report, power
# off. Every VMTEST line is for the host (tests/vm/scenarios/systemd-update.sh).
. /usr/lib/vm/lib.sh

# patchd.service as systemd sees it, and how long it has been up (the watchdog is proven
# once it ran past WatchdogSec without a restart).
unit() {
  s=$(systemctl show -p Type,ActiveState,SubState,WatchdogUSec,NRestarts,MainPID patchd.service | sort | tr '\n' ' ')
  since=$(systemctl show -p ActiveEnterTimestampMonotonic --value patchd.service)
  now=$(awk '{ printf "%d", $1 * 1000000 }' /proc/uptime)
  say "unit patchd $s up=$(( (now - since) / 1000000 ))s"
}

# The unprivileged user's calls: setpriv drops to uid 1000 with no groups, no PAM.
as_user() { setpriv --reuid=1000 --regid=1000 --clear-groups -- "$@"; }

dbus_checks() {
  patchctl status >/dev/null 2>&1; say "patchctl status rc=$?"
  patchctl history 2>&1 | sed 's/^/VMTEST: history /'
  patchctl history >/dev/null 2>&1; say "patchctl history rc=$?"
  patchctl hold --reason "vm test hold" >/dev/null 2>&1; say "patchctl hold rc=$?"
  if patchctl --json status 2>/dev/null | grep -q '"reason": "vm test hold"'; then say "hold listed"; fi
  as_user patchctl status >/dev/null 2>&1; say "user status rc=$?"
  as_user patchctl hold --reason "not allowed" >/dev/null 2>&1; say "user hold rc=$?"
  as_user patchctl release-hold >/dev/null 2>&1; say "user release-hold rc=$?"
  if patchctl --json status 2>/dev/null | grep -q '"reason": "vm test hold"'; then say "hold still listed"; fi
  patchctl release-hold >/dev/null 2>&1; say "patchctl release-hold rc=$?"
  if ! patchctl --json status 2>/dev/null | grep -q 'vm test hold'; then say "no holds"; fi
}

unit
if [ "$n" = 1 ]; then
  report start
  dbus_checks
  say "dbus checks done"
  # The host publishes v2 now; patchd checks every minute. systemd stops this service
  # when patchd's reboot starts.
  patchctl check >/dev/null 2>&1
  if wait_state 'state=(staged|switching)' 1500; then
    unit
    # Give patchd's reboot time to happen; if it does not, say so and power off.
    sleep 300
  fi
  report no-reboot
  finish
fi

if wait_state 'state=committed current=2\.0\.0' 900; then
  # patchd-boot-check.service waits for patchd's verdict; boot-complete.target needs it.
  i=0
  while [ "$(systemctl is-active patchd-boot-check.service)" = activating ] && [ $i -lt 120 ]; do
    sleep 1; i=$((i + 1))
  done
  say "boot-check $(systemctl show -p ActiveState,SubState,Result patchd-boot-check.service | sort | tr '\n' ' ')"
  say "boot-complete $(systemctl is-active boot-complete.target)"
  # Past the watchdog's 60 s with no restart.
  while [ "$(systemctl show -p ActiveEnterTimestampMonotonic --value patchd.service)" -gt \
    "$(awk '{ printf "%d", ($1 - 75) * 1000000 }' /proc/uptime)" ]; do sleep 5; done
  # The health checks ran in transient scopes of their own (systemd logs each start),
  # none is left, and nothing the check left behind survived it.
  say "health scopes started $(journalctl -b --no-pager -o cat | grep -c '^Started patchd-health-.*scope')"
  say "health scope fallbacks $(journalctl -b --no-pager -o cat -u patchd.service | grep -c 'without a scope')"
  say "health scopes left $(systemctl list-units --all --no-legend 'patchd-health-*' | wc -l)"
  left=0
  for p in /proc/[0-9]*; do
    case "$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null)" in "sleep 600 "*|"sleep 601 "*) left=$((left + 1));; esac
  done
  say "health leftovers $left"
  unit
  report goal
  if patchctl audit verify >/dev/null 2>&1; then say "audit verify ok"; else say "audit verify FAILED"; fi
  patchctl history 2>&1 | tail -n 8 | sed 's/^/VMTEST: history /'
else
  report timeout
  unit
fi
finish
