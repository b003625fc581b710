#!/bin/sh
# Shared by the systemd guest's hooks (/usr/lib/vm/hook.sh and the ones scenarios write
# over it): sourced, defines helpers and records this boot.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
D=/var/lib/patchd/vm
say() { echo "VMTEST: $*"; }
up() { cut -d. -f1 /proc/uptime; }
# field JSON NAME: a top-level field of patchctl's pretty JSON, unquoted.
field() {
  printf '%s\n' "$1" | grep "^  \"$2\": " | head -n 1 |
    sed -e 's/^[^:]*: *//' -e 's/,$//' -e 's/^"//' -e 's/"$//'
}

# wait_state REGEXP TIMEOUT: until "state=S current=V" matches, each new state once on
# the console.
wait_state() {
  deadline=$(( $(up) + $2 )) last=
  while :; do
    st=$(patchctl --json status 2>/dev/null)
    s="state=$(field "$st" state) current=$(field "$st" current_version)"
    if [ "$s" != "$last" ]; then say "state $s"; last=$s; fi
    if echo "$s" | grep -qE "$1" && [ "$(field "$st" progress)" = null ]; then return 0; fi
    [ "$(up)" -lt "$deadline" ] || return 1
    sleep 2
  done
}

# report WHAT: patchctl's view (state, booted slot, version) on the console and in
# $D/report.log.
report() {
  st=$(patchctl --json status 2>/dev/null)
  line="boot=$n slot=$slot release=$release $1 state=$(field "$st" state)"
  line="$line booted=$(field "$st" booted_slot) current=$(field "$st" current_version)"
  say "report $line"
  echo "$line" >>"$D/report.log"
}

finish() {
  sync
  say "poweroff"
  systemctl poweroff
  exit 0
}

# This boot: its number n (counted in $D/boots.log), the slot GRUB booted, the release.
slot=unknown
for arg in $(cat /proc/cmdline); do
  case $arg in patchd.slot=*) slot=${arg#patchd.slot=};; esac
done
release=$(cat /etc/vm-release)
mkdir -p "$D"
n=$(( $(cat "$D/boots.log" 2>/dev/null | wc -l) + 1 ))
echo "boot=$n slot=$slot release=$release" >>"$D/boots.log"
sync
say "booted boot=$n slot=$slot release=$release pid1=$(cat /proc/1/comm)"
