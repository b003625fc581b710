# vm: root
# (Pipelines end in `grep >/dev/null`, not `grep -q`: see apt-good-upgrade.)
# The apt guest, a kernel upgrade in the patch set, driven by the real `patchd run`:
# slot a runs Debian's kernel layout (linux-image-<abi1> installed, /boot/vmlinuz and
# /boot/initrd.img relative links to its files, made by linux-update-symlinks from the
# package's postinst); the archive's linux-image-amd64 1.0-2 moves to linux-image-<abi2>
# (a new package, new file names, an initramfs that also loads crc7). patchd stages
# both in the snapshot slots/b: the kernel package's maintainer scripts run there, the
# running root's /boot is unchanged (its hash before and after patchd on a), b's links
# point at the new files. Boot 2: GRUB follows b's links (BOOT_IMAGE /slots/b/boot/
# vmlinuz, crc7 loaded: the new initramfs), health passes, committed; boot 3 is b again.
scenario() {
  vm_apt_guest
  local k1 k2; k1=$(vm_apt_k1); k2=$(vm_apt_k2)
  vm_apt_serve "$W" $VM_APT_V1 $VM_APT_K1 $VM_APT_K2
  vm_apt_kernel_hook 'state=committed booted=b'
  vm_apt_boot
  assert_eq "boots" "$(vm_apt_boots)" "boot=1 slot=a pkgs=vm-probe=1.0-1,vm-tool=1.0-1 var=none
boot=2 slot=b pkgs=vm-probe=1.0-1,vm-tool=1.0-1 var=before-switch
boot=3 slot=b pkgs=vm-probe=1.0-1,vm-tool=1.0-1 var=before-switch"
  local a1 a1p st b2 b3
  a1=$(vm_apt_kernel_line 1 start); a1p=$(vm_apt_kernel_line 1 after-patchd)
  st=$(vm_apt_kernel_line 1 staged); b2=$(vm_apt_kernel_line 2 start); b3=$(vm_apt_kernel_line 3 start)
  assert_eq "a before patchd" "$(vm_apt_kernel_nosum "$a1")" \
    "boot=1 slot=a start vmlinuz=vmlinuz-$k1 initrd=initrd.img-$k1 meta=1.0-1 image=/slots/a/boot/vmlinuz crc7=no"
  assert_eq "a after staging and the switch" "$(vm_apt_kernel_nosum "$a1p")" \
    "boot=1 slot=a after-patchd vmlinuz=vmlinuz-$k1 initrd=initrd.img-$k1 meta=1.0-1 image=/slots/a/boot/vmlinuz crc7=no"
  [ -n "$(vm_apt_kernel_sum "$a1")" ] || fail "no /boot hash on a"
  assert_eq "a's /boot hash across staging" "$(vm_apt_kernel_sum "$a1p")" "$(vm_apt_kernel_sum "$a1")"
  assert_eq "the staged snapshot's kernel" "$(vm_apt_kernel_nosum "$st")" \
    "boot=1 slot=a staged vmlinuz=vmlinuz-$k2 initrd=initrd.img-$k2 meta=1.0-2"
  assert_eq "b's first boot" "$(vm_apt_kernel_nosum "$b2")" \
    "boot=2 slot=b start vmlinuz=vmlinuz-$k2 initrd=initrd.img-$k2 meta=1.0-2 image=/slots/b/boot/vmlinuz crc7=yes"
  assert_eq "b's /boot is the staged one" "$(vm_apt_kernel_sum "$b2")" "$(vm_apt_kernel_sum "$st")"
  assert_eq "b after the commit" "$(vm_apt_kernel_nosum "$b3")" \
    "boot=3 slot=b start vmlinuz=vmlinuz-$k2 initrd=initrd.img-$k2 meta=1.0-2 image=/slots/b/boot/vmlinuz crc7=yes"
  local set='[0-9]{4}\.[0-9]+\.[0-9]+\+[0-9a-f]{12}' rep
  rep=$(vm_cat "$DISK" 4 /vm/report.log)
  echo "$rep" | sed -n 1p | grep >/dev/null -E "^boot=1 slot=a release=apt reboot-requested state=switching booted=a current=.* staged=$set$" ||
    fail "patchd on a did not stage and switch the patch set: $(echo "$rep" | sed -n 1p)"
  echo "$rep" | sed -n 2p | grep >/dev/null -E "^boot=2 slot=b release=apt goal state=committed booted=b current=$set staged=null$" ||
    fail "patchd on b did not commit: $(echo "$rep" | sed -n 2p)"
  local staged; staged=$(vm_cat "$DISK" 4 /audit.log | grep '"staged"')
  echo "$staged" | grep >/dev/null -F '{"arch":"amd64","name":"linux-image-amd64","new":"1.0-2","old":"1.0-1"}' ||
    fail "the staged audit record does not list the metapackage's upgrade: $staged"
  echo "$staged" | grep >/dev/null -F "\"name\":\"linux-image-$k2\",\"new\":\"1.0-1\"" ||
    fail "the staged audit record does not list the new kernel package: $staged"
  vm_clean <"$LOG" | grep >/dev/null '^patchd: trying slot b, 0 attempt(s) left' || fail "GRUB did not try b once"
  grep -q 'VMTEST: audit verify ok' "$LOG" || fail "audit verify did not pass in the guest"
  vm_grubenv "$DISK" list | grep >/dev/null -x 'patchd_b_ok=1' || fail "b not committed in GRUB's environment"
}
