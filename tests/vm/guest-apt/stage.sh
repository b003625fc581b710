# Sourced by the apt guest's scenario hook (/vm/onboot.sh).
#
# STAND-IN: vma_stage does in shell what patchd's apt source will do when its staging
# step exists (AptUpdates::stage is not built yet: patchd says so and changes nothing):
# a writable snapshot of the running root subvolume, the upgrade inside it with
# apt-get (shared /var bound in, the snapshot's own dpkg database, /proc /sys /dev
# bound, service starts forbidden), `dpkg --audit`, then GRUB armed to try the snapshot
# once. Everything after that — GRUB's try-once boot of a subvolume slot, the health
# probe, the commit or GRUB's fallback — is the machine's real boot path.
VMA_TOP=/.btrfs/slots
VMA_ENV=/boot/grub-part/grub/grubenv

# vma_sources: apt's source for the host's archive (its key through Signed-By only).
vma_sources() {
  mkdir -p /etc/apt/sources.list.d
  echo "deb [signed-by=/usr/share/keyrings/vm-archive.gpg] $VM_REPO_URL ./" \
    >/etc/apt/sources.list.d/vm.list
}

vma_mount_boot() {
  grep -q ' /boot/grub-part ' /proc/mounts || mount /dev/vda1 /boot/grub-part ||
    echo "VMTEST: cannot mount the boot partition"
}

# vma_stage FROM TO PACKAGE...: snapshot slot FROM as slot TO, upgrade PACKAGEs inside.
vma_stage() {
  from=$1 to=$2; shift 2
  s=$VMA_TOP/$to
  if [ -d "$s" ]; then btrfs -q subvolume delete "$s" >/dev/null; fi
  btrfs -q subvolume snapshot "$VMA_TOP/$from" "$s" >/dev/null || return 1
  mkdir -p /run/vma-dpkg
  mount --bind "$s/var/lib/dpkg" /run/vma-dpkg &&
    mount --bind /var "$s/var" &&
    mount --move /run/vma-dpkg "$s/var/lib/dpkg" &&
    mount -t proc proc "$s/proc" && mount --bind /sys "$s/sys" && mount --bind /dev "$s/dev" ||
    { echo "VMTEST: staging mounts failed"; return 1; }
  printf '#!/bin/sh\nexit 101\n' >"$s/usr/sbin/policy-rc.d"; chmod 755 "$s/usr/sbin/policy-rc.d"
  echo "VMTEST: staging apt-get update"
  rc=0
  chroot "$s" apt-get -q update >/run/vma-apt.log 2>&1 || rc=1
  echo "VMTEST: staging apt-get install $*"
  [ $rc = 0 ] && DEBIAN_FRONTEND=noninteractive chroot "$s" apt-get -q -y \
    -o Dpkg::Options::=--force-confold install "$@" >>/run/vma-apt.log 2>&1 || rc=1
  [ $rc = 0 ] && [ -z "$(chroot "$s" dpkg --audit)" ] || rc=1
  sed 's/^/VMTEST: apt: /' /run/vma-apt.log | tail -n 8
  rm -f "$s/usr/sbin/policy-rc.d"
  umount "$s/dev" "$s/sys" "$s/proc" "$s/var/lib/dpkg" "$s/var"
  sync
  [ $rc = 0 ] || { echo "VMTEST: staging failed"; return 1; }
  echo "VMTEST: staged $to: $(chroot "$s" dpkg-query -W -f '${Package}=${Version} ' "$@")"
}

# vma_try TO FROM: GRUB tries TO once, FROM stays the committed fallback.
vma_try() {
  . /etc/grubenv.sh
  vma_mount_boot
  grubenv_set "$VMA_ENV" "patchd_order=$1 $2" "patchd_$1_ok=0" "patchd_$1_left=1" || return 1
  echo "VMTEST: armed $1 for one try"
}

# vma_health: the health check patchd runs (/etc/patchd/health.d), run here.
vma_health() {
  for c in /etc/patchd/health.d/*; do
    out=$("$c" 2>&1); rc=$?
    echo "VMTEST: health $(basename "$c") rc=$rc: $out"
    [ $rc = 0 ] || return 1
  done
}

# vma_commit SLOT: SLOT becomes GRUB's committed slot.
vma_commit() {
  . /etc/grubenv.sh
  vma_mount_boot
  grubenv_set "$VMA_ENV" "patchd_$1_ok=1" || return 1
  echo "VMTEST: committed $1"
}

# vma_patchd_scan WINDOW: the real `patchd run` with the apt source: its scan must offer the
# archive's upgrades as one patch set; its staging step reports that it is not built.
vma_patchd_scan() {
  . /usr/lib/vm/patchd-guest.sh
  vmp_start "http://127.0.0.1:9/" "$1"
  i=0
  while [ $i -lt 60 ] && kill -0 "$VMP_PID" 2>/dev/null; do
    l=$(vmp_ctl list 2>&1)
    case $l in *"patch set"*) sleep 4; break;; esac
    sleep 2; i=$((i + 1))
  done
  printf '%s\n' "$l" | sed 's/^/VMTEST: list /'
  vmp_ctl --json status 2>/dev/null | grep -E '"(state|last_error)"' | sed 's/^/VMTEST: status /'
  vmp_stop
}
