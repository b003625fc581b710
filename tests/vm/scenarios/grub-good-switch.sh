# A good new release: slot b (v2) is tried once, its userspace marks it good in the GRUB
# environment and reboots; the second boot must come up on b again without counting.
scenario() {
  vm_assemble "$DISK" v1 v2
  vm_grubenv "$DISK" set patchd_order="b a" patchd_a_ok=1 patchd_b_ok=0 patchd_b_left=1
  cat >"$W/onboot.sh" <<'HOOK'
if [ "$VM_BOOT" = 1 ] && [ "$VM_SLOT" = b ]; then
  . /etc/grubenv.sh
  mount /dev/vda1 /boot/grub-part
  grubenv_set /boot/grub-part/grub/grubenv patchd_b_ok=1
  umount /boot/grub-part
  echo "VMTEST: marked b good"
  action=reboot
fi
HOOK
  vm_put "$DISK" 4 "$W/onboot.sh" /vm/onboot.sh
  vm_start "$DISK" "$LOG"
  vm_wait_exit 900 || fail "guest did not power off within 900s"
  local boots; boots=$(vm_cat "$DISK" 4 /vm/boots.log)
  echo "guest reported: $boots"
  assert_eq "boots" "$boots" "boot=1 slot=b release=v2
boot=2 slot=b release=v2"
  local env; env=$(vm_grubenv "$DISK" list)
  echo "grubenv after: $env"
  echo "$env" | grep -qx 'patchd_b_ok=1' || fail "b not marked good"
  echo "$env" | grep -qx 'patchd_b_left=0' || fail "b's attempt was not counted"
}
