# vm: root
# (Pipelines end in `grep >/dev/null`, not `grep -q`: see apt-good-upgrade.)
# The apt guest, a patch set with a kernel upgrade whose health check fails (as
# apt-kernel-upgrade, plus vm-probe 1.0-3): patchd stages it in slots/b (b's links on
# the new kernel, a's /boot untouched), switches; b boots the new kernel and initramfs,
# the check fails, patchd rolls back by itself: slot a boots its OLD kernel and
# initramfs (its links, its /boot hash as before, crc7 not loaded).
scenario() {
  vm_apt_guest
  local k1 k2; k1=$(vm_apt_k1); k2=$(vm_apt_k2)
  vm_apt_serve "$W" $VM_APT_V1 $VM_APT_K1 $VM_APT_K2 vm-probe=1.0-3
  vm_apt_kernel_hook 'state=rolled_back booted=a'
  vm_apt_boot
  assert_eq "boots" "$(vm_apt_boots | head -n 3)" "boot=1 slot=a pkgs=vm-probe=1.0-1,vm-tool=1.0-1 var=none
boot=2 slot=b pkgs=vm-probe=1.0-3,vm-tool=1.0-1 var=before-switch
boot=3 slot=a pkgs=vm-probe=1.0-1,vm-tool=1.0-1 var=before-switch"
  local a1 a1p st b2 a3
  a1=$(vm_apt_kernel_line 1 start); a1p=$(vm_apt_kernel_line 1 after-patchd)
  st=$(vm_apt_kernel_line 1 staged); b2=$(vm_apt_kernel_line 2 start); a3=$(vm_apt_kernel_line 3 start)
  local old="vmlinuz=vmlinuz-$k1 initrd=initrd.img-$k1 meta=1.0-1 image=/slots/a/boot/vmlinuz crc7=no"
  assert_eq "a before patchd" "$(vm_apt_kernel_nosum "$a1")" "boot=1 slot=a start $old"
  [ -n "$(vm_apt_kernel_sum "$a1")" ] || fail "no /boot hash on a"
  assert_eq "a's /boot hash across staging" "$(vm_apt_kernel_sum "$a1p")" "$(vm_apt_kernel_sum "$a1")"
  assert_eq "the staged snapshot's kernel" "$(vm_apt_kernel_nosum "$st")" \
    "boot=1 slot=a staged vmlinuz=vmlinuz-$k2 initrd=initrd.img-$k2 meta=1.0-2"
  assert_eq "b's try" "$(vm_apt_kernel_nosum "$b2")" \
    "boot=2 slot=b start vmlinuz=vmlinuz-$k2 initrd=initrd.img-$k2 meta=1.0-2 image=/slots/b/boot/vmlinuz crc7=yes"
  assert_eq "a after the rollback" "$(vm_apt_kernel_nosum "$a3")" "boot=3 slot=a start $old"
  assert_eq "a's /boot hash after the rollback" "$(vm_apt_kernel_sum "$a3")" "$(vm_apt_kernel_sum "$a1")"
  local rep; rep=$(vm_cat "$DISK" 4 /vm/report.log)
  echo "$rep" | sed -n 1p | grep >/dev/null "^boot=1 slot=a release=apt reboot-requested state=switching booted=a " ||
    fail "patchd on a did not switch: $(echo "$rep" | sed -n 1p)"
  echo "$rep" | sed -n 2p | grep >/dev/null "^boot=2 slot=b release=apt reboot-requested state=rolled_back " ||
    fail "patchd on b did not roll back by itself: $(echo "$rep" | sed -n 2p)"
  echo "$rep" | sed -n 3p | grep >/dev/null "^boot=3 slot=a release=apt goal state=rolled_back booted=a " ||
    fail "a does not report rolled_back: $(echo "$rep" | sed -n 3p)"
  grep -q 'VMTEST: audit verify ok' "$LOG" || fail "audit verify did not pass in the guest"
  local env; env=$(vm_grubenv "$DISK" list)
  echo "$env" | grep >/dev/null -x 'patchd_a_ok=1' || fail "a is not GRUB's committed slot"
  if echo "$env" | grep >/dev/null -x 'patchd_b_ok=1'; then fail "b was committed"; fi
}
