# Sourced by the apt guest's scenario hook (/vm/onboot.sh): apt's source for the
# host's archive (its key through Signed-By only; rewritten at every boot, as the
# archive's port changes per scenario).
vma_sources() {
  mkdir -p /etc/apt/sources.list.d
  echo "deb [signed-by=/usr/share/keyrings/vm-archive.gpg] $VM_REPO_URL ./" \
    >/etc/apt/sources.list.d/vm.list
}

# vma_kernel TAG [ROOT]: ROOT's (default the running root's) kernel and initramfs as
# GRUB finds them — where /boot/vmlinuz and /boot/initrd.img point, the kernel
# metapackage's version, a hash over every file and link in /boot — and, for the running
# root, the kernel file GRUB was told to load (BOOT_IMAGE) and whether the initramfs that
# loads crc7 booted: one line on the console and in /vm/kernel.log.
vma_kernel() {
  r=${2:-}
  k=$(readlink "$r/boot/vmlinuz"); i=$(readlink "$r/boot/initrd.img")
  meta=$(dpkg-query --admindir="$r/usr/lib/sysimage/dpkg" -W -f '${Version}' linux-image-amd64 2>/dev/null)
  sum=$(cd "$r/boot" && find . -maxdepth 1 ! -type d | sort | while read -r f; do
    if [ -L "$f" ]; then echo "$f -> $(readlink "$f")"; else sha256sum "$f"; fi
  done | sha256sum | cut -c1-16)
  line="boot=$VM_BOOT slot=$VM_SLOT $1 vmlinuz=$k initrd=$i meta=$meta boot-sum=$sum"
  if [ -z "$r" ]; then
    img=$(sed -n 's/.*BOOT_IMAGE=\([^ ]*\).*/\1/p' /proc/cmdline)
    m=no; grep -q '^crc7 ' /proc/modules && m=yes
    line="$line image=$img crc7=$m"
  fi
  echo "VMTEST: kernel $line"
  echo "$line" >>/var/lib/patchd/vm/kernel.log
  sync
}
