#!/bin/sh
# Guest side of the sysext-merge scenario (replaces /usr/lib/vm/hook.sh in that
# scenario's copy of the systemd root; run by vm-test.service as root, output on the
# serial console). Drives patchd's sysext installer through `patchd sysext` with its
# device defaults (systemd-sysext run through systemd-run, outside any sandbox) against
# this real systemd: a directory-tree extension installed, upgraded, a mismatched
# extension-release refused, rolled back, a squashfs extension merged, both removed.
# Every VMTEST line is for the host (tests/vm/scenarios/sysext-merge.sh).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
D=/var/lib/patchd/vm
say() { echo "VMTEST: $*"; }
show() { say "$1 $(cat "/usr/share/$2/version" 2>/dev/null || echo missing)"; }
# px NAME ARGS...: patchd sysext ARGS, its output and exit status on the console.
px() {
  tag=$1; shift
  out=$(patchd sysext "$@" 2>&1); rc=$?
  printf '%s\n' "$out" | sed "s/^/VMTEST: $tag out: /"
  say "$tag rc=$rc"
}

say "booted sysext pid1=$(cat /proc/1/comm) os=$(. /etc/os-release; echo "$ID/$VERSION_ID")"
# overlayfs, loop and squashfs: modules the host added to this run's root, loaded by
# systemd-modules-load.service at boot.
say "filesystems $(grep -cE 'overlay|squashfs' /proc/filesystems) loop $(test -e /dev/loop-control && echo yes || echo no)"

px install1 install "$D/sx-tree-1.tar" --name vmext --version 1
show content1 vmext
say "status1 $(systemd-sysext status --no-pager 2>&1 | tr -s ' \n' ' ')"
px install2 install "$D/sx-tree-2.tar" --name vmext --version 2
show content2 vmext
# Refused before activation: another VERSION_ID, another ID; nothing changes.
px check-bad check "$D/sx-tree-bad-version.tar" --name vmext
px install-bad install "$D/sx-tree-bad-version.tar" --name vmext --version 3
px install-badid install "$D/sx-tree-bad-id.tar" --name vmext --version 4
show content-after-bad vmext
px rollback roll-back vmext
show content-rolled-back vmext
# A squashfs image, merged beside the tree, and one for another OS refused.
px raw1 install "$D/sx-raw-1.raw" --name vmraw --version 1
show raw-content vmraw
px raw-bad install "$D/sx-raw-bad.raw" --name vmraw --version 2
show raw-after-bad vmraw
px status status
# Removed: unmerged by the refresh when the last one goes.
px remove1 roll-back vmext --remove
show removed-vmext vmext
px remove2 roll-back vmraw --remove
show removed-vmraw vmraw
say "status-end $(systemd-sysext status --no-pager 2>&1 | tr -s ' \n' ' ')"
say "done"
sync
systemctl poweroff
