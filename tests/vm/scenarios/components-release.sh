# vm: root
# One signed release of an OS image and three components, installed, judged and rolled
# back as one by the packaged patchd.service in the systemd guest (systemd as PID 1):
# a sysext (directory tree, for Debian 12), an app bundle whose real unit vmapp.service
# runs from the bundle's current copy, and a handler component whose root-owned handler
# (named in the device configuration) "flashes" what it gets. Release 2 (OS sv2): all
# three install in manifest order on a, one reboot into b, the health checks pass,
# committed; on b the extension is merged into /usr, the unit runs app 2, the handler
# got the published bytes, the inventory shows each version and the audit log has one
# record per component step. Release 3 (OS sv3, new versions; app 3 fails the health
# check): after the reboot into a the verdict is bad and everything goes back at once:
# the components in reverse order (the handler reinstalls 2), the OS to b. The guest
# side is tests/vm/guest-components/ (hook, unit, health check, handler), written into
# this run's roots; the extensions live on the data partition (bind-mounted on
# /var/lib/extensions) so they outlive an OS slot switch, as app bundles do.
scenario() {
  vm_have_patchd || fail "release binaries missing (cargo build --release)"
  [ "$(id -u)" = 0 ] || fail "needs root (debootstrap, chroot)"
  local t=$SECONDS gc=$VM_DIR/guest-components dev=$W/dev c=$W/components p=$VM_CACHE/parts
  vm_build_systemd
  echo "systemd parts ready after $((SECONDS - t))s"
  export VM_NET=1
  vm_assemble "$DISK" sv1 - data-sd

  # The device's side, in every root of this run: the app's unit (enabled), the health
  # check probing it, the handler, the hook, the boot's merge of the extensions (with
  # overlayfs as a module) and their persistent home.
  local u=$dev/etc/systemd/system
  mkdir -p "$u/multi-user.target.wants" "$u/sysinit.target.wants" "$u/systemd-sysext.service.d"
  cp "$gc/vmapp.service" "$u/"
  ln -s /etc/systemd/system/vmapp.service "$u/multi-user.target.wants/vmapp.service"
  ln -s /lib/systemd/system/systemd-sysext.service "$u/sysinit.target.wants/systemd-sysext.service"
  cp "$gc/sysext.conf" "$u/systemd-sysext.service.d/10-vm.conf"
  install -D -m 755 "$gc/20-vmapp" "$dev/etc/patchd/health.d/20-vmapp"
  install -D -m 755 "$gc/mcu-flash" "$dev/usr/libexec/vm/mcu-flash"
  install -D -m 755 "$gc/hook.sh" "$dev/usr/lib/vm/hook.sh"
  { cat "$VM_DIR/guest-systemd/fstab"
    echo "/var/lib/patchd/extensions /var/lib/extensions none bind,x-systemd.requires-mounts-for=/var/lib/patchd 0 0"
  } >"$dev/etc/fstab"
  vm_guest_modules "$dev" components-vm overlay
  vm_part_tree "$DISK" 2 "$dev" || fail "could not write the device's files onto slot a"
  cp --sparse=always "$p/root-sv2.img" "$W/root-sv2.img"
  cp --sparse=always "$p/root-sv2.img" "$W/root-sv3.img"
  mkdir -p "$W/sv3/etc"; echo sv3 >"$W/sv3/etc/vm-release"
  vm_tree_put "$W/root-sv2.img" "$dev" && vm_tree_put "$W/root-sv3.img" "$dev" &&
    vm_tree_put "$W/root-sv3.img" "$W/sv3" || fail "could not write the device's files into sv2/sv3"

  # The components of releases 2 and 3.
  local v
  for v in 2 3; do
    mkdir -p "$c/ext$v/usr/lib/extension-release.d" "$c/ext$v/usr/share/vmext" "$c/app$v/bin"
    printf 'ID=debian\nVERSION_ID=12\n' >"$c/ext$v/usr/lib/extension-release.d/extension-release.vmext"
    echo "vmext $v" >"$c/ext$v/usr/share/vmext/version"
    tar -C "$c/ext$v" --owner=0 --group=0 -cf "$c/vmext-$v.tar" usr
    # App 3 starts but says it is broken: what the health check probes.
    printf '#!/bin/sh\necho "%s %s $(readlink -f "$0")" >/run/vmapp/status\nexec sleep infinity\n' \
      "$([ "$v" = 3 ] && echo broken || echo ok)" "$v" >"$c/app$v/bin/vmapp"
    chmod 755 "$c/app$v/bin/vmapp"
    tar -C "$c/app$v" --owner=0 --group=0 -cf "$c/vmapp-$v.tar" bin
    { echo "mcu firmware $v"; head -c 8192 /dev/urandom; } >"$c/mcu-$v.bin"
  done
  comps() { # comps V: the --component arguments of release V
    echo --component "name=vmext,version=$1,method=sysext,file=$c/vmext-$1.tar,order=1"
    echo --component "name=vmapp,version=$1,method=app-bundle,file=$c/vmapp-$1.tar,order=2,units=vmapp.service"
    echo --component "name=mcu,version=$1,method=handler,file=$c/mcu-$1.bin,order=3"
  }

  vm_repo_setup "$W"
  vm_serve "$W"
  mkdir -p "$W/data/vm" "$W/data/extensions"
  printf '[repository]\nurl = "%s"\n\n[policy]\nwindows = ["%s"]\n\n[[components.handler]]\ncomponent = "mcu"\npath = "/usr/libexec/vm/mcu-flash"\n' \
    "$VM_REPO_URL" "$(vm_window_now)" >"$W/data/vm/50-vm.toml"
  vm_part_tree "$DISK" 4 "$W/data" || fail "could not write the data partition"

  t=$SECONDS
  vm_start "$DISK" "$LOG"
  vm_wait_console "$LOG" 'VMTEST: ready' 900 || fail "boot 1 never reached the hook"
  echo "boot 1 ready after $((SECONDS - t))s"
  # shellcheck disable=SC2046 # one argument a line, none with spaces
  vm_publish "$W" sv2 2.0.0 "$W/root-sv2.img" $(comps 2)
  vm_wait_console "$LOG" 'VMTEST: release 2 checked' 1800 || fail "release 2 was not committed on b"
  echo "release 2 committed and checked after $((SECONDS - t))s"
  # shellcheck disable=SC2046
  vm_publish "$W" sv3 3.0.0 "$W/root-sv3.img" $(comps 3)
  vm_wait_console "$LOG" 'VMTEST: booted boot=4' 1800 || fail "no boot after release 3's trial"
  echo "boot 4 (after the rollback) after $((SECONDS - t))s"
  vm_wait_exit 900 || fail "guest did not power off"
  VM_PID=
  echo "guest powered off after $((SECONDS - t))s"
  vm_show_results
  components_release_check
}

# What the guest and its disk show after the run (a function of its own, so a kept
# disk and console can be checked again: W, DISK and LOG set).
components_release_check() {
  local c=$W/components b1 b2 b3 b4 sha2 sha3
  b1=$(vm_boot_console "$LOG" 1) b2=$(vm_boot_console "$LOG" 2)
  b3=$(vm_boot_console "$LOG" 3) b4=$(vm_boot_console "$LOG" 4)
  # A here-string, not a pipe: grep -q stops reading at the first match, and under
  # pipefail the writer's SIGPIPE would fail the check at random.
  has() { grep -qE "$2" <<<"$1" || fail "$3 (no '$2' on the console)"; }
  sha2=$(sha256sum <"$c/mcu-2.bin" | cut -d' ' -f1)
  sha3=$(sha256sum <"$c/mcu-3.bin" | cut -d' ' -f1)
  has "$b1" 'VMTEST: booted boot=1 slot=a release=sv1 pid1=systemd' "boot 1 is not sv1 on a under systemd"
  # Release 2, committed on b.
  has "$b2" 'VMTEST: booted boot=2 slot=b release=sv2' "boot 2 is not sv2 on b"
  has "$b2" 'VMTEST: report .* release2 state=committed booted=b current=2\.0\.0' "release 2 not committed on b"
  has "$b2" 'VMTEST: release2 sysext vmext 2$' "vmext 2 is not merged into /usr on b"
  has "$b2" 'VMTEST: release2 merged .*/usr vmext' "systemd-sysext does not show vmext merged"
  local app2
  app2=$(echo "$b2" | sed -n 's|^VMTEST: release2 app ok 2 \(/var/lib/patchd/apps/vmapp/[ab]/bin/vmapp\) unit=active current=[ab]$|\1|p')
  [ -n "$app2" ] || fail "vmapp.service does not run app 2 from the bundle: $(echo "$b2" | grep 'release2 app')"
  has "$b2" "VMTEST: release2 mcu install mcu 2 slot=b size=[0-9]+ got=$sha2 expected=$sha2" "the handler did not get mcu 2's bytes"
  local comp
  # patchctl --json prints the keys sorted: copy, method, name, origin, sha256, version.
  for comp in 'sysext","name":"vmext' 'app-bundle","name":"vmapp' 'handler","name":"mcu'; do
    has "$b2" "VMTEST: release2 inventory .*\"method\":\"$comp\",\"origin\":\"2\.0\.0\",\"sha256\":\"[0-9a-f]{64}\",\"version\":\"2\"" \
      "the inventory does not show $comp at 2"
  done
  has "$b2" 'VMTEST: release2 audit verify ok' "audit verify failed on b"
  # Release 3's plan as patchctl status shows it, then its trial on a.
  has "$b2" 'VMTEST: plan .*vmapp 2 → 3' "patchctl status showed no plan for vmapp"
  has "$b3" 'VMTEST: booted boot=3 slot=a release=sv3' "boot 3 is not release 3's trial on a"
  # After the rollback: everything as release 2 left it.
  has "$b4" 'VMTEST: booted boot=4 slot=b release=sv2' "boot 4 is not sv2 on b"
  has "$b4" 'VMTEST: report .* rolled-back state=rolled_back booted=b' "patchd does not report rolled_back"
  has "$b4" 'VMTEST: after-rollback sysext vmext 2$' "vmext is not back at 2"
  has "$b4" "VMTEST: after-rollback app ok 2 $app2 unit=active current=" "vmapp.service does not run app 2 again"
  has "$b4" 'VMTEST: after-rollback mcu rollback mcu 2 .*got='"$sha2 expected=$sha2" "the handler did not reinstall mcu 2"
  for comp in 'sysext","name":"vmext' 'app-bundle","name":"vmapp' 'handler","name":"mcu'; do
    has "$b4" "VMTEST: after-rollback inventory .*\"method\":\"$comp\",\"origin\":\"2\.0\.0\",\"sha256\":\"[0-9a-f]{64}\",\"version\":\"2\"" \
      "the inventory after the rollback does not show $comp at 2"
  done
  has "$b4" 'VMTEST: after-rollback audit verify ok' "audit verify failed after the rollback"
  assert_eq "boots" "$(vm_cat "$DISK" 4 /vm/boots.log)" "boot=1 slot=a release=sv1
boot=2 slot=b release=sv2
boot=3 slot=a release=sv3
boot=4 slot=b release=sv2"
  assert_eq "handler runs" "$(vm_cat "$DISK" 4 /vm/mcu/log | cut -d' ' -f1-4,6-)" \
    "install mcu 2 slot=b got=$sha2 expected=$sha2
install mcu 3 slot=a got=$sha3 expected=$sha3
rollback mcu 2 slot= got=$sha2 expected=$sha2"
  assert_eq "flashed" "$(vm_cat "$DISK" 4 /vm/mcu/flash | sha256sum | cut -d' ' -f1)" "$sha2"
  vm_grubenv "$DISK" list | grep -qx 'patchd_b_ok=1' || fail "b not committed in GRUB's environment"
  # One audit record per component step, in order.
  local steps
  steps=$(vm_cat "$DISK" 4 /audit.log | python3 -c '
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    c = r.get("extra", {}).get("component")
    if c:
        print(r["event"].removeprefix("component_"), c, r.get("release"))')
  echo "--- component steps"; echo "$steps"
  assert_eq "component steps" "$steps" "staged vmext 2.0.0
staged vmapp 2.0.0
staged mcu 2.0.0
switched vmext 2.0.0
switched vmapp 2.0.0
switched mcu 2.0.0
committed vmext 2.0.0
committed vmapp 2.0.0
committed mcu 2.0.0
staged vmext 3.0.0
staged vmapp 3.0.0
staged mcu 3.0.0
switched vmext 3.0.0
switched vmapp 3.0.0
switched mcu 3.0.0
rolled_back mcu 3.0.0
rolled_back vmapp 3.0.0
rolled_back vmext 3.0.0"
  vm_audit_events "$DISK" | tr '\n' ' ' | grep -qE "(^| )rolled_back .*reboot" || fail "no rollback and reboot in the audit log"
}
