#!/bin/sh
# Guest side of the components-release scenario (written over /usr/lib/vm/hook.sh in
# that run's roots; run by vm-test.service after patchd.service, as root; its output is
# on the serial console). Boot 1 (sv1 on a): the host publishes release 2 (OS image sv2,
# sysext vmext, app bundle vmapp, handler component mcu) when it reads "ready"; patchd
# installs the components, switches and reboots. Boot 2 (sv2 on b): once committed, what
# each component shows; then release 3 (sv3 and new components; vmapp 3 fails the health
# check). Boot 3 (sv3 on a): the health check fails, patchd rolls back. Boot 4 (sv2 on
# b): what each component shows after the rollback. Every VMTEST line is for the host
# (tests/vm/scenarios/components-release.sh).
. /usr/lib/vm/lib.sh

# show TAG: what the system shows of each component now.
show() {
  say "$1 sysext $(cat /usr/share/vmext/version 2>/dev/null || echo missing)"
  say "$1 merged $(systemd-sysext status --no-pager 2>&1 | tr -s ' \n' ' ')"
  say "$1 app $(cat /run/vmapp/status 2>/dev/null || echo none) unit=$(systemctl is-active vmapp.service) current=$(readlink /var/lib/patchd/apps/vmapp/current)"
  say "$1 mcu $(tail -n 1 "$D/mcu/log" 2>/dev/null || echo none)"
  say "$1 inventory $(patchctl --json inventory 2>&1 | tr -d ' \n')"
  patchctl status 2>&1 | sed "s/^/VMTEST: $1 status /"
  if patchctl audit verify >/dev/null 2>&1; then say "$1 audit verify ok"; else say "$1 audit verify FAILED"; fi
}

# update: ask patchd to check now (the host published a release), show its plan for the
# components once it is offered, until patchd stages it (it then switches and reboots).
update() {
  sleep 3
  patchctl check >/dev/null 2>&1
  deadline=$(( $(up) + 1500 )) planned=
  while [ "$(up)" -lt "$deadline" ]; do
    text=$(patchctl status 2>/dev/null)
    if [ -z "$planned" ] && echo "$text" | grep -q '^ *Component'; then
      echo "$text" | grep '^ *Component' | sed 's/^ */VMTEST: plan /'
      planned=1
    fi
    s=$(field "$(patchctl --json status 2>/dev/null)" state)
    case $s in staged|switching|verifying) say "state $s"; break ;; esac
    sleep 1
  done
  # patchd reboots now; if it does not, say so and power off.
  sleep 300
  report no-reboot
  finish
}

case "$release:$n" in
  sv1:1)
    report start
    say "ready"
    update
    ;;
  sv2:2)
    if wait_state 'state=committed current=2\.0\.0' 900; then
      report release2
      show release2
      say "release 2 checked"
      update
    fi
    report timeout
    ;;
  sv3:*)
    # The health checks fail here (vmapp 3 says "broken"); patchd rolls back and reboots.
    show trial3
    sleep 600
    report no-rollback
    ;;
  sv2:*)
    if wait_state 'state=rolled_back' 900; then
      report rolled-back
      show after-rollback
      patchctl history 2>&1 | tail -n 6 | sed 's/^/VMTEST: history /'
    else
      report timeout
    fi
    ;;
esac
say "done"
finish
