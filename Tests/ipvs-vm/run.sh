#!/usr/bin/env bash
# Boots Debian's own kernel (6.1, with IPVS) in qemu software emulation with a small initramfs
# and runs Tests/ipvs-vm/scenario/check.sh inside it. Nothing here touches the host's network:
# every interface, namespace and virtual server lives inside the VM.
#
# Usage: Tests/ipvs-vm/run.sh [--auto|--manual|--kuberules] [--shell] [--keep] [KUBERULES_BIN]
#   --manual     program IPVS with ipvsadm (the baseline that proves the kernel side)
#   --kuberules  program IPVS with `kuberules apply --backend ipvs` and check the result
#   --auto       (default) --kuberules when `kuberules render --backend ipvs` works, else --manual
#   --shell      after the scenario, open a shell on the serial console (exit it to power off)
#   --keep       keep the initramfs staging directory (path printed) for inspection
# Environment:
#   KUBERULES_BIN       the kuberules binary (else the argument, else built with swift build)
#   KUBERULES_ARGS      extra arguments for every in-VM kuberules call (after --config /scenario/proxy.yaml)
#   KUBERULES_VM_SHELL=1   same as --shell
#   IPVS_VM_CACHE       cache directory (default .build/ipvs-vm in the repository)
#   IPVS_VM_REFRESH=1   fetch the Debian packages again (new kernel / security updates)
#   IPVS_VM_TIMEOUT     seconds before the VM is killed (default 180)
#   IPVS_VM_APPEND      extra kernel command line (e.g. "loglevel=7")
#   IPVS_VM_PRE         shell commands run in the VM before the scenario (e.g. "sysctl -w ...")
# Exit: 0 when every check passed and at least one ran; 1 on a failed check; 2 on a setup error.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${IPVS_VM_CACHE:-$REPO/.build/ipvs-vm}
TIMEOUT=${IPVS_VM_TIMEOUT:-180}
MODE=auto
SHELL_AFTER=${KUBERULES_VM_SHELL:-0}
KEEP=0
BIN=${KUBERULES_BIN:-}

while [ $# -gt 0 ]; do
  case "$1" in
    --auto) MODE=auto ;;
    --manual) MODE=manual ;;
    --kuberules) MODE=kuberules ;;
    --shell) SHELL_AFTER=1 ;;
    --keep) KEEP=1 ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    -*) echo "run.sh: unknown option $1" >&2; exit 2 ;;
    *) BIN=$1 ;;
  esac
  shift
done

log() { echo "ipvs-vm: $*" >&2; }
die() { echo "ipvs-vm: error: $*" >&2; exit 2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# Debian packages (bookworm). glibc (libc6) comes from the host, which is the same release.
USER_PKGS="busybox-static ipvsadm ipset libipset13 iptables libip4tc2 libip6tc2 libxtables12
  libmnl0 libnetfilter-conntrack3 libnfnetlink0 libnftnl11 libnl-3-200 libnl-genl-3-200 libpopt0
  iproute2 libbpf1 libbsd0 libcap2 libelf1 libmd0 zlib1g libtirpc3 libdb5.3 libselinux1
  libpcre2-8-0 socat libwrap0 libssl3 libnsl2"
# Modules loaded explicitly (modprobe resolves modules.dep); anything else under the netfilter
# trees is in the initramfs too and autoloads when iptables/ipset/nft ask for it.
MODULES="crc32c_generic libcrc32c nf_defrag_ipv4 nf_defrag_ipv6 nf_conntrack nf_nat
  ip_vs ip_vs_rr ip_vs_mh ip_vs_sh dummy veth nfnetlink nf_tables nft_compat nft_chain_nat
  x_tables ip_tables iptable_nat iptable_filter xt_set xt_comment xt_mark xt_addrtype
  xt_conntrack xt_MASQUERADE ip_set ip_set_hash_ip ip_set_hash_ipport ip_set_hash_ipportip
  ip_set_hash_ipportnet ip_set_hash_net ip_set_bitmap_port xt_physdev xt_ipvs ipt_REJECT"

T_ALL=$(now)
mkdir -p "$CACHE"
command -v timeout >/dev/null || die "coreutils timeout is missing"

# ---- qemu (the only host install) -------------------------------------------------------------
if ! command -v qemu-system-x86_64 >/dev/null; then
  [ "$(id -u)" = 0 ] || die "qemu-system-x86_64 is missing: apt-get install qemu-system-x86"
  log "installing qemu-system-x86"
  export DEBIAN_FRONTEND=noninteractive
  timeout 600 apt-get install -y -qq --no-install-recommends qemu-system-x86 >/dev/null ||
    { timeout 300 apt-get update -qq && timeout 600 apt-get install -y -qq --no-install-recommends qemu-system-x86 >/dev/null; } ||
    die "could not install qemu-system-x86"
fi

# ---- fetch (cached) ---------------------------------------------------------------------------
DEBS=$CACHE/debs
fetch() {
  local kpkg tmp
  kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
  if [ -z "$kpkg" ]; then
    timeout 300 apt-get update -qq >/dev/null || die "apt-get update failed"
    kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
  fi
  [ -n "$kpkg" ] || die "cannot resolve linux-image-amd64 to a kernel package"
  tmp=$(mktemp -d "$CACHE/debs.tmp.XXXXXX")
  local sandbox=(); [ "$(id -u)" = 0 ] && sandbox=(-o APT::Sandbox::User=root)
  # shellcheck disable=SC2086
  if ! (cd "$tmp" && timeout 600 apt-get download -q "${sandbox[@]}" "$kpkg" $USER_PKGS >/dev/null); then
    timeout 300 apt-get update -qq >/dev/null || true
    # shellcheck disable=SC2086
    (cd "$tmp" && timeout 600 apt-get download -q "${sandbox[@]}" "$kpkg" $USER_PKGS >/dev/null) ||
      { rm -rf "$tmp"; die "apt-get download failed"; }
  fi
  echo "$kpkg" > "$tmp/.kernel-package"
  rm -rf "$DEBS"; mv "$tmp" "$DEBS"
}
T=$(now)
if [ ! -f "$DEBS/.kernel-package" ] || [ "${IPVS_VM_REFRESH:-0}" = 1 ]; then
  log "fetching Debian packages into $DEBS"
  fetch
  FETCH_NOTE="fetched"
else
  FETCH_NOTE="cached"
fi
KPKG=$(cat "$DEBS/.kernel-package")
KDEB=$(ls "$DEBS/${KPKG}"_*.deb 2>/dev/null | head -1)
[ -n "$KDEB" ] || die "kernel package $KPKG missing from $DEBS (IPVS_VM_REFRESH=1 to fetch again)"
T_FETCH=$(since "$T")

# ---- unpack (cached, keyed on the set of .deb files) --------------------------------------------
T=$(now)
KEY=$(cd "$DEBS" && ls -- *.deb | sha256sum | cut -c1-16)
ROOT=$CACHE/root-$KEY          # unpacked userland packages
KROOT=$CACHE/kernel-$KEY       # vmlinuz + the module trees we use, with modules.dep
if [ ! -f "$ROOT/.done" ]; then
  log "unpacking userland packages"
  rm -rf "$CACHE"/root-*; mkdir -p "$ROOT"
  for deb in "$DEBS"/*.deb; do
    case "$deb" in "$KDEB") continue ;; esac
    dpkg-deb -x "$deb" "$ROOT"
  done
  touch "$ROOT/.done"
fi
BB=$ROOT/bin/busybox
[ -x "$BB" ] || die "busybox-static did not unpack to $BB"
if [ ! -f "$KROOT/.done" ]; then
  log "unpacking $KPKG (boot image and network/crypto/lib module trees)"
  rm -rf "$CACHE"/kernel-*; mkdir -p "$KROOT"
  dpkg-deb --fsys-tarfile "$KDEB" | tar -x -C "$KROOT" --wildcards \
    './boot/vmlinuz-*' './lib/modules/*/kernel/net/*' './lib/modules/*/kernel/lib/*' \
    './lib/modules/*/kernel/crypto/*' './lib/modules/*/kernel/drivers/net/dummy.ko' \
    './lib/modules/*/kernel/drivers/net/veth.ko' './lib/modules/*/modules.builtin' \
    './lib/modules/*/modules.order'
  KVER=$(ls "$KROOT/lib/modules")
  "$BB" depmod -b "$KROOT" "$KVER"
  touch "$KROOT/.done"
fi
KVER=$(ls "$KROOT/lib/modules")
VMLINUZ=$(ls "$KROOT"/boot/vmlinuz-*)
T_UNPACK=$(since "$T")

# ---- the kuberules binary ------------------------------------------------------------------------
T=$(now)
if [ -z "$BIN" ] && [ "$MODE" != manual ]; then
  command -v swift >/dev/null || die "no KUBERULES_BIN given and swift is not installed"
  log "building kuberules (release, static Swift stdlib) in $REPO/.build-static"
  if (cd "$REPO" && timeout 3000 swift build -c release --static-swift-stdlib \
      --scratch-path "$REPO/.build-static" --product kuberules >&2); then
    BIN=$REPO/.build-static/release/kuberules
  elif [ "$MODE" = auto ]; then
    log "WARNING: swift build failed: running the manual (ipvsadm) scenario without kuberules"
    MODE=manual
  else
    die "swift build failed"
  fi
elif [ -z "$BIN" ] && [ -x "$REPO/.build-static/release/kuberules" ]; then
  BIN=$REPO/.build-static/release/kuberules   # manual mode: include it if it was built
fi
[ -z "$BIN" ] || [ -x "$BIN" ] || die "kuberules binary $BIN is not executable"
T_BIN=$(since "$T")

if [ "$MODE" = auto ]; then
  if [ -n "$BIN" ] && timeout 60 "$BIN" render --backend ipvs --node-name node --node-ip 192.168.50.1 \
      "$HERE/scenario/cluster.yaml" >/dev/null 2>&1; then
    MODE=kuberules
  else
    MODE=manual
  fi
fi
[ "$MODE" = manual ] || [ -n "$BIN" ] || die "--kuberules needs a kuberules binary"
log "mode: $MODE${BIN:+ (binary $BIN)}"

# ---- initramfs -----------------------------------------------------------------------------------
T=$(now)
mkdir -p "$CACHE/tmp"
STAGE=$(mktemp -d "$CACHE/tmp/stage.XXXXXX")
SERIAL=$(mktemp "$CACHE/tmp/serial.XXXXXX")
cleanup() {
  [ "$KEEP" = 1 ] && log "kept initramfs staging in $STAGE" || rm -rf "$STAGE"
  rm -f "$SERIAL" "$CACHE/initrd.$$"
}
trap cleanup EXIT
mkdir -p "$STAGE"/{bin,sbin,lib,lib64,etc,proc,sys,dev,run,tmp,root,scenario}
mkdir -p "$STAGE/usr/lib/x86_64-linux-gnu" "$STAGE/lib/x86_64-linux-gnu"

cp "$BB" "$STAGE/bin/busybox"
for applet in $("$BB" --list); do
  case "$applet" in busybox|ip) continue ;; esac   # `ip` is Debian's iproute2 (netns support)
  ln -s busybox "$STAGE/bin/$applet"
done

# Copies one file to the same path in the initramfs, following symlinks.
put() { mkdir -p "$STAGE$(dirname "$2")"; cp -L "$1" "$STAGE$2"; }

EXES=()
for t in ipvsadm ipset xtables-legacy-multi xtables-nft-multi ip socat; do
  f=""
  for d in sbin usr/sbin bin usr/bin; do [ -f "$ROOT/$d/$t" ] && { f=$ROOT/$d/$t; break; }; done
  [ -n "$f" ] || die "$t is missing from the unpacked packages"
  put "$f" "/sbin/$t"; EXES+=("$f")
done
for t in iptables ip6tables; do
  for s in "" -save -restore; do
    ln -s xtables-legacy-multi "$STAGE/sbin/$t-legacy$s"
    ln -s xtables-nft-multi "$STAGE/sbin/$t-nft$s"
    ln -s xtables-nft-multi "$STAGE/sbin/$t$s"          # Debian's default alternative
  done
done
# iptables extensions are dlopen()ed: ldd cannot see them.
XT=usr/lib/x86_64-linux-gnu/xtables
mkdir -p "$STAGE/$XT"; cp -a "$ROOT/$XT/." "$STAGE/$XT/"
for so in "$ROOT/$XT"/*.so; do EXES+=("$so"); done
[ -d "$ROOT/etc/iproute2" ] && cp -a "$ROOT/etc/iproute2" "$STAGE/etc/"
for f in protocols services; do
  if [ -f "/etc/$f" ]; then cp "/etc/$f" "$STAGE/etc/$f"; fi
done
[ -f "$STAGE/etc/protocols" ] || printf 'ip 0 IP\nicmp 1 ICMP\ntcp 6 TCP\nudp 17 UDP\nsctp 132 SCTP\n' > "$STAGE/etc/protocols"
echo "root:x:0:0:root:/root:/bin/sh" > "$STAGE/etc/passwd"
echo "root:x:0:" > "$STAGE/etc/group"

if [ -n "$BIN" ]; then
  cp "$BIN" "$STAGE/sbin/kuberules"
  strip "$STAGE/sbin/kuberules" 2>/dev/null || true
  EXES+=("$BIN")
fi

# Shared libraries: resolve against the unpacked packages first, the host (glibc) second.
LIBPATH="$ROOT/lib/x86_64-linux-gnu:$ROOT/usr/lib/x86_64-linux-gnu"
declare -A SEEN=()
for exe in "${EXES[@]}"; do
  out=$(LD_LIBRARY_PATH=$LIBPATH ldd "$exe" 2>&1) || { case "$out" in *"not a dynamic"*) continue ;; esac; die "ldd $exe: $out"; }
  if grep -q "not found" <<<"$out"; then die "ldd $exe: $(grep 'not found' <<<"$out" | head -3)"; fi
  while read -r lib; do
    [ -n "$lib" ] && [ -z "${SEEN[$lib]:-}" ] || continue
    SEEN[$lib]=1
    case "$lib" in
      */ld-linux-x86-64.so.2) put "$lib" /lib64/ld-linux-x86-64.so.2 ;;
      *) put "$lib" "/lib/x86_64-linux-gnu/$(basename "$lib")" ;;
    esac
  done < <(awk '/=> \// { print $3 } /^\t\/.*ld-linux/ { print $1 }' <<<"$out")
done

# Modules: the netfilter trees, dummy, veth, crc32c and whatever they depend on (modules.dep).
KMOD=lib/modules/$KVER
declare -A MODS=()
addmod() {
  local m=$1 d
  [ -n "${MODS[$m]:-}" ] && return 0
  MODS[$m]=1
  for d in $(awk -v m="$m:" '$1 == m { for (i = 2; i <= NF; i++) print $i }' "$KROOT/$KMOD/modules.dep"); do addmod "$d"; done
}
while read -r m; do addmod "$m"; done < <(cd "$KROOT/$KMOD" && find kernel/net/netfilter kernel/net/ipv4/netfilter \
  kernel/net/ipv6/netfilter kernel/drivers/net kernel/crypto/crc32c_generic.ko kernel/lib/libcrc32c.ko -name '*.ko')
for m in "${!MODS[@]}"; do put "$KROOT/$KMOD/$m" "/$KMOD/$m"; done
cp "$KROOT/$KMOD/modules.builtin" "$KROOT/$KMOD/modules.order" "$STAGE/$KMOD/"
"$BB" depmod -b "$STAGE" "$KVER"
for m in $MODULES; do
  grep -q "/$m.ko:" "$STAGE/$KMOD/modules.dep" || grep -q "/$m.ko\$" "$STAGE/$KMOD/modules.builtin" ||
    die "module $m is not in $KPKG"
done

cp -a "$HERE/scenario/." "$STAGE/scenario/"
cp "$HERE/init" "$STAGE/init"
chmod +x "$STAGE/init" "$STAGE/scenario/"*.sh
{
  echo "IPVS_MODE=$MODE"
  echo "IPVS_SHELL=$SHELL_AFTER"
  echo "IPVS_MODULES=\"$(echo $MODULES)\""
  printf 'KUBERULES_ARGS=%q\n' "${KUBERULES_ARGS:-}"
} > "$STAGE/etc/ipvs-vm.env"
printf '%s\n' "${IPVS_VM_PRE:-}" > "$STAGE/etc/ipvs-vm.pre"

INITRD=$CACHE/initrd.$$
(cd "$STAGE" && find . | LC_ALL=C sort | "$BB" cpio -o -H newc 2>/dev/null | gzip -1) > "$INITRD"
T_INITRD=$(since "$T")
log "initramfs $(du -h "$INITRD" | cut -f1) (staging $(du -sh "$STAGE" | cut -f1)), built in ${T_INITRD}s"

# ---- boot ----------------------------------------------------------------------------------------
T=$(now)
QEMU=(qemu-system-x86_64 -nographic -m 1024 -smp 1 -kernel "$VMLINUZ" -initrd "$INITRD"
      -append "console=ttyS0 quiet panic=-1 ${IPVS_VM_APPEND:-}" -no-reboot)
log "booting $KPKG ($KVER) in qemu (timeout ${TIMEOUT}s)"
set +e
if [ "$SHELL_AFTER" = 1 ]; then
  timeout --foreground "$TIMEOUT" "${QEMU[@]}" 2>&1 | tee "$SERIAL"
else
  timeout "$TIMEOUT" "${QEMU[@]}" </dev/null 2>&1 | tr -d '\r' | tee "$SERIAL" | sed -u 's/^/  vm| /' >&2
fi
QRC=${PIPESTATUS[0]}
set -e
T_BOOT=$(since "$T")

# ---- result --------------------------------------------------------------------------------------
tr -d '\r' < "$SERIAL" > "$SERIAL.clean" && mv "$SERIAL.clean" "$SERIAL"
PASSED=$(grep -c '^IPVS-TEST: PASS ' "$SERIAL" || true)
FAILED=$(grep -c '^IPVS-TEST: FAIL ' "$SERIAL" || true)
SKIPPED=$(grep -c '^IPVS-TEST: SKIP ' "$SERIAL" || true)
DONE=$(grep -c '^IPVS-TEST: DONE' "$SERIAL" || true)
echo "---- ipvs-vm summary ($MODE mode, $KPKG) ----"
grep -E '^IPVS-TEST: (PASS|FAIL|SKIP) ' "$SERIAL" | sed 's/^IPVS-TEST: /  /' || true
echo "timings: fetch ${T_FETCH}s ($FETCH_NOTE), unpack ${T_UNPACK}s, binary ${T_BIN}s, initramfs ${T_INITRD}s, boot-to-result ${T_BOOT}s, total $(since "$T_ALL")s"
status=0
if [ "$DONE" = 0 ]; then
  if [ "$QRC" = 124 ]; then echo "ipvs-vm: the VM timed out after ${TIMEOUT}s"; else echo "ipvs-vm: the VM stopped before the scenario finished (qemu exit $QRC)"; fi
  FAILED=$((FAILED + 1)); status=1
fi
[ "$FAILED" = 0 ] || status=1
[ "$PASSED" -gt 0 ] || { echo "ipvs-vm: no check ran"; status=1; }
echo "ipvs: $PASSED passed, $FAILED failed, $SKIPPED skipped"
exit $status
