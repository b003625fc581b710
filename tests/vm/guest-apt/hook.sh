# Sourced by the apt guest's scenario hook (/vm/onboot.sh): apt's source for the
# host's archive (its key through Signed-By only; rewritten at every boot, as the
# archive's port changes per scenario).
vma_sources() {
  mkdir -p /etc/apt/sources.list.d
  echo "deb [signed-by=/usr/share/keyrings/vm-archive.gpg] $VM_REPO_URL ./" \
    >/etc/apt/sources.list.d/vm.list
}
