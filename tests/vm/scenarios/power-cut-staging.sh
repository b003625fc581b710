# Power cuts while slot b is written, at the bootloader switch, and during the first
# boot of the new slot: after every cut the machine boots a good release, and the
# update retried from the start ends on b. The guest's staging here is a plain
# verify-then-switch script (no daemon): it proves the disk/GRUB sequencing and gives
# the runner its seeded power-cut machinery.
# VM_SEED replays a run; VM_CUTS staging cut points (default 10).
# daemon-power-cut does the same around patchd's own staging; this one stays for
# debugging the disk and GRUB sequencing without the daemon.
# vm: manual
scenario() {
  local seed=${VM_SEED:-$(( $(date +%s) % 32768 ))} cuts=${VM_CUTS:-10}
  echo "seed=$seed cuts=$cuts (replay: VM_SEED=$seed tests/vm/vm run power-cut-staging)"
  vm_log "power-cut-staging: seed $seed"
  RANDOM=$seed
  vm_assemble "$DISK" v1 v1
  vm_grubenv "$DISK" set patchd_order="a b" patchd_a_ok=1 patchd_b_ok=0 patchd_b_left=0

  local img=$VM_CACHE/parts/root-v2.img size sum
  size=$(stat -c %s "$img")
  sum=$(sha256sum <"$img" | cut -d' ' -f1)
  vm_put "$DISK" 4 "$img" /vm/v2.img
  cat >"$W/onboot.sh" <<HOOK
. /etc/grubenv.sh
if [ "\$VM_SLOT" = a ]; then
  echo "VMTEST: staging start"
  dd if=/var/lib/patchd/vm/v2.img of=/dev/vda3 bs=1M conv=fsync 2>/dev/null
  echo "VMTEST: staging written"
  got=\$(head -c $size /dev/vda3 | sha256sum | cut -d' ' -f1)
  if [ "\$got" = "$sum" ]; then
    mount /dev/vda1 /boot/grub-part
    grubenv_set /boot/grub-part/grub/grubenv "patchd_order=b a" patchd_b_ok=0 patchd_b_left=1
    umount /boot/grub-part
    echo "VMTEST: switched"
    action=reboot
  else
    echo "VMTEST: staged image does not verify (\$got)"
  fi
elif [ "\$VM_SLOT" = b ] && [ -f /var/lib/patchd/vm/commit ]; then
  mount /dev/vda1 /boot/grub-part
  grubenv_set /boot/grub-part/grub/grubenv patchd_b_ok=1
  umount /boot/grub-part
  echo "VMTEST: committed"
else
  # While the host is still cutting power, b stays uncommitted: GRUB's spent counter
  # sends the next boot back to a, which stages again.
  echo "VMTEST: b up, not committing yet"
fi
HOOK
  vm_put "$DISK" 4 "$W/onboot.sh" /vm/onboot.sh

  local i=0 log t0 delay phase staging_ms=${VM_STAGING_MS:-} runs=0
  # Starts the guest until a boot on a begins staging; a boot that lands on the
  # uncommitted b (the previous cut came after the switch) just powers off again.
  start_until_staging() {
    while :; do
      runs=$((runs + 1)); [ "$runs" -le $((cuts * 2 + 10)) ] || fail "too many boots"
      log=$W/console-run$runs.log
      vm_start "$DISK" "$log"
      vm_wait_console "$log" 'VMTEST: (staging start|b up)' 600 || fail "run $runs: no staging and no b"
      grep -q 'VMTEST: staging start' "$log" && return 0
      vm_wait_exit 300 || fail "run $runs: b did not power off"
      VM_PID=
      echo "run $runs: booted the staged b (uncommitted), powered off"
    done
  }
  # Staging cuts: a random delay after staging started, or at the switch itself when
  # the guest gets there first (a cut at the moment of the bootloader switch).
  while [ "$i" -lt "$cuts" ]; do
    i=$((i + 1))
    start_until_staging
    t0=$(date +%s%N)
    if [ -z "$staging_ms" ]; then
      # The first cut comes at the switch and measures how long staging (write and
      # verify) takes, so later points spread over all of it.
      vm_wait_console "$log" 'VMTEST: (switched|staged image)' 900 || fail "cut $i: staging did not end"
      staging_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
      delay=measure
    else
      delay=$(( (RANDOM * 32768 + RANDOM) % (staging_ms + 1) ))
      vm_wait_console "$log" 'VMTEST: switched' "${delay}ms" || true
    fi
    vm_kill; VM_PID=
    phase=$(grep -a 'VMTEST:' "$log" | tail -n 1 | vm_clean)
    echo "cut $i (run $runs): after $(( ($(date +%s%N) - t0) / 1000000 ))ms (target ${delay}ms of ${staging_ms}ms), last: $phase"
  done
  # Cuts during the first boot of the new slot, before its userspace runs.
  for i in 1 2; do
    start_until_staging
    vm_wait_console "$log" 'VMTEST: switched' 600 || fail "boot cut $i: no switch"
    if [ "$i" = 1 ]; then
      vm_wait_console "$log" 'patchd: booting slot b' 300 || fail "boot cut $i: GRUB did not pick b"
    else
      vm_wait_console "$log" 'vm-initramfs: mounting root=/dev/vda3' 300 || fail "boot cut $i: b's kernel did not start"
    fi
    vm_kill; VM_PID=
    echo "boot cut $i (run $runs): last: $(grep -aE 'VMTEST:|patchd:|vm-initramfs' "$log" | tail -n 1 | vm_clean)"
  done
  echo "commit" >"$W/commit"
  vm_put "$DISK" 4 "$W/commit" /vm/commit
  # No more cuts: the retried update must end on b, committed.
  log=$W/console.log
  vm_start "$DISK" "$log"
  vm_wait_exit 1200 || fail "final run did not power off"
  VM_PID=
  local boots; boots=$(vm_cat "$DISK" 4 /vm/boots.log)
  echo "guest reported:"; echo "$boots"
  # Every boot that reached userspace ran a good release from the slot that holds it.
  if echo "$boots" | grep -vE '^boot=[0-9]+ (slot=a release=v1|slot=b release=v2)$'; then
    fail "a boot ran something other than v1 on a or v2 on b"
  fi
  assert_eq "last boot" "$(echo "$boots" | tail -n 1 | cut -d' ' -f2-)" "slot=b release=v2"
  grep -q 'VMTEST: committed' "$log" || fail "b was not committed"
  local env; env=$(vm_grubenv "$DISK" list)
  echo "grubenv after: $env"
  echo "$env" | grep -qx 'patchd_b_ok=1' || fail "b not marked good"
}
