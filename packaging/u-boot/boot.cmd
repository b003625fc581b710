# patchd A/B try-once boot script for U-Boot (compile: mkimage -A arm64 -T script -C none -d boot.cmd boot.scr)
#
# Environment (the common A/B convention, written by patchd through fw_setenv-compatible I/O):
#   BOOT_ORDER     boot order, preferred first, e.g. "B A"; a slot not listed is bad
#   BOOT_<S>_LEFT  attempts left while on trial (0-9); a committed slot keeps 3 for
#                  RAUC-style scripts
#   BOOT_<S>_OK    1 = committed: boots without using attempts (patchd extension)
# Walk the order: a committed slot boots; a slot on trial loses one attempt (saveenv
# before the kernel starts) and boots; a slot with no attempts left is skipped.
#
# Board settings (set them in the default environment):
#   patchd_iface (mmc), patchd_devnum (0), patchd_part_a / patchd_part_b (partition numbers),
#   patchd_root_a / patchd_root_b (kernel root=), patchd_kernel (/boot/Image),
#   patchd_fdt (optional device tree path), patchd_cmdline (extra kernel arguments).

test -n "${BOOT_ORDER}" || setenv BOOT_ORDER "A B"
test -n "${BOOT_A_LEFT}" || setenv BOOT_A_LEFT 3
test -n "${BOOT_B_LEFT}" || setenv BOOT_B_LEFT 3
test -n "${patchd_iface}" || setenv patchd_iface mmc
test -n "${patchd_devnum}" || setenv patchd_devnum 0
test -n "${patchd_kernel}" || setenv patchd_kernel /boot/Image

setenv patchd_slot
setenv patchd_save
for s in ${BOOT_ORDER}; do
  if test -z "${patchd_slot}"; then
    if test "${s}" = "A"; then
      if test "${BOOT_A_OK}" = "1"; then
        setenv patchd_slot a
      elif test ${BOOT_A_LEFT} -gt 0; then
        setexpr BOOT_A_LEFT ${BOOT_A_LEFT} - 1
        setenv patchd_save 1
        setenv patchd_slot a
      fi
    elif test "${s}" = "B"; then
      if test "${BOOT_B_OK}" = "1"; then
        setenv patchd_slot b
      elif test ${BOOT_B_LEFT} -gt 0; then
        setexpr BOOT_B_LEFT ${BOOT_B_LEFT} - 1
        setenv patchd_save 1
        setenv patchd_slot b
      fi
    fi
  fi
done

if test -z "${patchd_slot}"; then
  echo "patchd: no bootable slot in BOOT_ORDER=${BOOT_ORDER} (all bad or out of attempts)"
  exit
fi

if test -n "${patchd_save}"; then
  setenv patchd_save
  saveenv
fi

if test "${patchd_slot}" = "a"; then
  setenv patchd_part ${patchd_part_a}
  setenv patchd_root ${patchd_root_a}
else
  setenv patchd_part ${patchd_part_b}
  setenv patchd_root ${patchd_root_b}
fi
echo "patchd: booting slot ${patchd_slot}"
setenv bootargs "${patchd_cmdline} root=${patchd_root} rootwait ro patchd.slot=${patchd_slot}"
load ${patchd_iface} ${patchd_devnum}:${patchd_part} ${kernel_addr_r} ${patchd_kernel}
if test -n "${patchd_fdt}"; then
  load ${patchd_iface} ${patchd_devnum}:${patchd_part} ${fdt_addr_r} ${patchd_fdt}
  booti ${kernel_addr_r} - ${fdt_addr_r}
else
  booti ${kernel_addr_r} - ${fdtcontroladdr}
fi
