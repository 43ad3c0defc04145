#!/usr/bin/env bash
# The Raspberry Pi install test (`make test-pi`): Raspberry Pi OS is Debian 12 bookworm on aarch64 with
# Python 3.11, so an arm64 bookworm rootfs run through qemu-user shows that the wheel `make dist` built
# installs with its [device] extra and gives the same answers there as on x86.
#
#   .ci/test-pi.sh dist/instrument_ai-VERSION-py3-none-any.whl
#
# As root; needs qemu-user-static, binfmt-support, debootstrap and zstd (the Makefile installs them).
# Steps: the base rootfs (debootstrap minbase from the mirror apt here uses, cached as a tarball under
# ~/.cache/instrument-ai keyed on arch, suite and package list) -> a venv in /opt/instrument-ai, as
# docs/raspberry-pi.md does -> pip install WHEEL[device] -> for each CPU (cortex-a72 = Pi 4,
# cortex-a76 = Pi 5, cortex-a53 = Pi 3): `inspect` (the bundle's self-test), `run --source demo --fast --json --every-hop`
# and `classify --json --timeline`, compared with the same commands on x86 by .ci/pi_compare.py.
#
# Three traps, all handled here (each measured with qemu 7.2, ai-edge-litert 2.3.0):
# - LiteRT's CPU detection reads /proc/cpuinfo, which through qemu is the x86 host's: it segfaults. So
#   the cpuinfo of the Pi whose core QEMU_CPU names (tests/fixtures/pi/) is bind-mounted over it.
# - With qemu's default CPU model ("max": SVE, I8MM, ...) XNNPACK computes wrong numbers (the bundle's
#   self-test: "differs by 116"), so every command runs with QEMU_CPU naming a real Pi core.
# - Without /sys the detection gives up and XNNPACK's fallback kernels round differently ("differs by
#   2" on every core), so sysfs is mounted too (read-only). The core XNNPACK tunes for comes from the
#   cpuinfo file ("CPU part"), the instructions it may use from QEMU_CPU: the two must name one Pi.
#
# Every mount is undone on exit, also on failure and Ctrl-C; the work folder is then removed.
# Environment: PI_MIRROR (default: apt's own bookworm source), PI_CPUS ("cortex-a72 cortex-a76 cortex-a53"),
# INSTRUMENT_AI_CACHE (~/.cache/instrument-ai), PI_KEEP=1 keeps the work folder for a look afterwards.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
ARCH=arm64
SUITE=bookworm
VARIANT=minbase
PACKAGES=python3,python3-venv,python3-pip,libportaudio2,libsndfile1,ca-certificates
CPUS=${PI_CPUS:-cortex-a72 cortex-a76 cortex-a53}
CACHE=${INSTRUMENT_AI_CACHE:-$HOME/.cache/instrument-ai}
VENV_IN_ROOT=/opt/instrument-ai
PY=${PI_HOST_PYTHON:-$REPO/.venv/bin/python}
X86_CLI=${PI_HOST_CLI:-$REPO/.venv/bin/instrument-ai}

log() { printf '[test-pi %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

[ $# -eq 1 ] || { echo "usage: $0 dist/instrument_ai-VERSION-py3-none-any.whl" >&2; exit 2; }
WHEEL=$(readlink -f "$1")
[ -f "$WHEEL" ] || { echo "test-pi: $1: no such wheel (run make dist)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "test-pi: needs root (debootstrap, chroot, mount)" >&2; exit 2; }
for tool in debootstrap update-binfmts zstd findmnt; do
  command -v "$tool" >/dev/null || { echo "test-pi: $tool missing (make test-pi installs it)" >&2; exit 2; }
done
[ -x "$X86_CLI" ] || { echo "test-pi: $X86_CLI missing (make venv)" >&2; exit 2; }

# The wheel must carry what a Pi needs besides the code: the shipped models and the device assets.
python3 - "$WHEEL" <<'EOF' || exit 1
import sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
needed = ["instrument_ai/models/default.tflite", "instrument_ai/device/assets/demo.flac",
          "instrument_ai/device/assets/page.html"]
missing = [name for name in needed if name not in names]
if missing:
    sys.exit(f"test-pi: {sys.argv[1]} lacks {', '.join(missing)}")
EOF

START=$(date +%s)
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/instrument-ai-pi.XXXXXX")
ROOT=$WORK/root
BINFMT_MOUNTED_HERE=0

# --- cleanup: every mount under WORK, deepest first, then the folder (never across a mount) -------
mounts_under_work() { findmnt -rn -o TARGET | grep -F "$WORK/" | awk '{ print length, $0 }' | sort -rn | cut -d' ' -f2-; }
cleanup() {
  local status=$? target
  trap - EXIT INT TERM
  while read -r target; do
    [ -n "$target" ] || continue
    umount "$target" 2>/dev/null || umount -l "$target" || log "could not unmount $target"
  done < <(mounts_under_work)
  if [ "$BINFMT_MOUNTED_HERE" = 1 ]; then umount /proc/sys/fs/binfmt_misc 2>/dev/null || true; fi
  rm -f "$CACHE"/pi-rootfs-*.tar.zst.tmp.$$  # a tarball cut short is never taken for the cache
  if [ -n "$(mounts_under_work)" ]; then
    log "mounts remain under $WORK; not removing it"
  elif [ "${PI_KEEP:-0}" = 1 ]; then
    log "kept $WORK"
  else
    rm -rf --one-file-system "$WORK"
  fi
  log "done in $(( $(date +%s) - START )) s (exit $status)"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- qemu-aarch64 through binfmt_misc ---------------------------------------------------------------
if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc \
    || die "cannot mount binfmt_misc (a container without CAP_SYS_ADMIN?); qemu-user needs it"
  BINFMT_MOUNTED_HERE=1
fi
update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
grep -qx enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null \
  || die "qemu-aarch64 is not registered in binfmt_misc (update-binfmts --enable qemu-aarch64 failed)"
# The F flag makes the kernel open qemu at registration, so it works inside the chroot too.
grep -q '^flags:.*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 \
  || die "qemu-aarch64 is registered without the F flag; reinstall qemu-user-static"

# --- the base rootfs, cached --------------------------------------------------------------------------
apt_mirror() {
  # The URI apt on this machine uses for SUITE itself (not -updates/-security), from sources.list(.d).
  # shellcheck disable=SC2016  # $(FIELD) is apt's own template syntax, not the shell's
  apt-get indextargets --format '$(RELEASE) $(REPO_URI)' 'Identifier: Packages' 2>/dev/null \
    | awk -v suite="$SUITE" '$1 == suite { print $2; exit }'
}
KEY=$(printf '%s\n' "$ARCH" "$SUITE" "$VARIANT" "$PACKAGES" | sha256sum | cut -c1-16)
TARBALL=$CACHE/pi-rootfs-$SUITE-$ARCH-$KEY.tar.zst
mkdir -p "$ROOT"
if [ -f "$TARBALL" ]; then
  log "base rootfs from cache: $TARBALL"
  tar --zstd -xpf "$TARBALL" --numeric-owner -C "$ROOT"
else
  MIRROR=${PI_MIRROR:-$(apt_mirror)}
  [ -n "$MIRROR" ] || die "no apt source for $SUITE in /etc/apt/sources.list(.d) (run apt-get update, or set PI_MIRROR)"
  log "debootstrap $ARCH $SUITE ($VARIANT, $PACKAGES) from $MIRROR: several minutes, cached afterwards"
  debootstrap --arch="$ARCH" --variant="$VARIANT" --include="$PACKAGES" "$SUITE" "$ROOT" "$MIRROR" \
    > "$WORK/debootstrap.log" 2>&1 || { tail -20 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }
  rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/*_Packages
  mkdir -p "$CACHE"
  tar --zstd -cpf "$TARBALL.tmp.$$" --numeric-owner -C "$ROOT" .
  mv "$TARBALL.tmp.$$" "$TARBALL"
  log "cached $TARBALL ($(du -h "$TARBALL" | cut -f1))"
fi
[ -x "$ROOT/usr/bin/python3.11" ] || die "the rootfs has no python3.11 (Raspberry Pi OS bookworm's Python)"

# --- what the chroot needs to reach the package index: DNS, CA certificates, pip's configuration ------
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
cp -L /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
mount -t proc proc "$ROOT/proc"
mount --bind /dev "$ROOT/dev"
mount -t sysfs -o ro sysfs "$ROOT/sys"

# pip's configuration files as pip itself lists them, copied to the same paths; the local files and
# folders they or PIP_* name (constraints, certificates, find-links, file:// indexes) come along,
# folders bind-mounted read-only.
carry_path() {
  local path=${1#file://}
  case "$path" in /*) ;; *) return 0 ;; esac
  # A local index (file:///X/simple) links its files outside simple/ (X/files/...): carry X.
  case "$1" in file://*/simple | file://*/simple/) path=$(dirname "${path%/}") ;; esac
  [ -e "$path" ] || return 0
  [ -e "$ROOT$path" ] && [ ! -d "$path" ] && return 0
  if [ -d "$path" ]; then
    mountpoint -q "$ROOT$path" && return 0  # named twice (pip.conf and PIP_*)
    mkdir -p "$ROOT$path"
    mount --bind -o ro "$path" "$ROOT$path" 2>/dev/null || { mount --bind "$path" "$ROOT$path"; mount -o remount,bind,ro "$ROOT$path"; }
  else
    mkdir -p "$(dirname "$ROOT$path")"
    cp -L "$path" "$ROOT$path"
  fi
}
HOST_PIP_CONFIG=$("$PY" -m pip config debug 2>/dev/null | awk '/, exists: True$/ { sub(/^ */, ""); sub(/, exists: True$/, ""); print }')
while read -r file; do
  [ -n "$file" ] || continue
  target=$file
  case "$file" in "$HOME"/*) target=/root/${file#"$HOME"/} ;; esac
  mkdir -p "$(dirname "$ROOT$target")"
  cp -L "$file" "$ROOT$target"
done <<< "$HOST_PIP_CONFIG"
PIP_VALUES=$( { "$PY" -m pip config list 2>/dev/null | sed -E "s/^[^=]+='?//; s/'$//"; env | grep '^PIP_' | cut -d= -f2-; } | tr ' ' '\n')
while read -r value; do [ -n "$value" ] && carry_path "$value"; done <<< "$PIP_VALUES"
PIP_ENV=()
while IFS= read -r line; do PIP_ENV+=("$line"); done < <(env | grep '^PIP_' || true)

cpuinfo_for() {
  # The /proc/cpuinfo of the Raspberry Pi built around that core (tests/fixtures/pi/).
  case "$1" in
    cortex-a72) echo cpuinfo-pi4-arm64.txt ;;
    cortex-a76) echo cpuinfo-pi5-arm64.txt ;;
    cortex-a53) echo cpuinfo-pi3-arm64.txt ;;
    *) die "no Raspberry Pi has a $1 (PI_CPUS: cortex-a72, cortex-a76, cortex-a53)" ;;
  esac
}
for cpu in $CPUS; do cpuinfo_for "$cpu" >/dev/null; done

in_root() {
  # A command in the rootfs, with a clean environment, as root would run it on the Pi; $1 is QEMU_CPU.
  local cpu=$1; shift
  chroot "$ROOT" /usr/bin/env -i HOME=/root PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 TERM=dumb \
    QEMU_CPU="$cpu" "${PIP_ENV[@]}" "$@"
}

# --- install the wheel, as docs/raspberry-pi.md does ---------------------------------------------------
FIRST_CPU=${CPUS%% *}
mkdir -p "$ROOT/tmp/pi"
cp "$WHEEL" "$ROOT/tmp/pi/"
WHEEL_NAME=$(basename "$WHEEL")
mount --bind "$REPO/tests/fixtures/pi/$(cpuinfo_for "$FIRST_CPU")" "$ROOT/proc/cpuinfo"
log "python3 -m venv $VENV_IN_ROOT; pip install ${WHEEL_NAME}[device] (QEMU_CPU=$FIRST_CPU)"
in_root "$FIRST_CPU" python3 -m venv "$VENV_IN_ROOT"
in_root "$FIRST_CPU" "$VENV_IN_ROOT/bin/pip" install --no-cache-dir --progress-bar off -q "/tmp/pi/${WHEEL_NAME}[device]" \
  || die "pip install ${WHEEL_NAME}[device] failed in the arm64 rootfs"
in_root "$FIRST_CPU" "$VENV_IN_ROOT/bin/pip" list 2>/dev/null | grep -iE '^(instrument-ai|ai-edge-litert|numpy|soundfile|sounddevice|flatbuffers) ' >&2
umount "$ROOT/proc/cpuinfo"
WANT_VERSION=$(echo "$WHEEL_NAME" | cut -d- -f2)
GOT_VERSION=$(in_root "$FIRST_CPU" "$VENV_IN_ROOT/bin/instrument-ai" --version 2>/dev/null | awk '{ print $NF }')
[ "$GOT_VERSION" = "$WANT_VERSION" ] || die "instrument-ai --version says '$GOT_VERSION', the wheel is $WANT_VERSION"

# --- the same commands on x86 (the project venv) and on arm64 ------------------------------------------
OUT=$WORK/out
mkdir -p "$OUT"
# A file for `classify` that is not the demo as shipped: 12 s of it, stereo, 44.1 kHz, 16-bit, so the
# downmix and the resampler run on arm64 too.
"$PY" - "$OUT/clip-44k-stereo.wav" <<'EOF'
import sys
from importlib.resources import files

import numpy as np
import soundfile as sf

demo, rate = sf.read(str(files("instrument_ai.device.assets") / "demo.flac"), dtype="float64", always_2d=True)
mono = demo[4 * rate : 16 * rate, 0]
out_rate = 44100
t = np.arange(int(len(mono) * out_rate / rate)) * (rate / out_rate)
resampled = np.interp(t, np.arange(len(mono)), mono)
sf.write(sys.argv[1], np.stack([resampled, 0.5 * resampled], axis=1), out_rate, subtype="PCM_16")
EOF
cp "$OUT/clip-44k-stereo.wav" "$ROOT/tmp/pi/"
DEMO_IN_ROOT=$(in_root "$FIRST_CPU" "$VENV_IN_ROOT/bin/python" -c \
  'from importlib.resources import files; print(files("instrument_ai.device.assets") / "demo.flac")' 2>/dev/null)
BUNDLE_IN_ROOT=$(in_root "$FIRST_CPU" "$VENV_IN_ROOT/bin/python" -c \
  'import instrument_ai.models as m; print(list(m.__path__)[0] + "/default.tflite")' 2>/dev/null)
cp "$ROOT$DEMO_IN_ROOT" "$ROOT/tmp/pi/demo.flac"

log "x86 reference: $X86_CLI run/classify"
unset INSTRUMENT_AI_MODEL INSTRUMENT_AI_RUNTIME  # the same shipped model and runtime choice as in the rootfs
"$X86_CLI" run --source demo --fast --json --every-hop > "$OUT/run-x86.jsonl" 2> "$OUT/run-x86.err" \
  || { cat "$OUT/run-x86.err" >&2; die "x86 run failed"; }
(cd "$OUT" && "$X86_CLI" classify --json --timeline "$ROOT/tmp/pi/demo.flac" clip-44k-stereo.wav > classify-x86.jsonl 2> classify-x86.err) \
  || { cat "$OUT/classify-x86.err" >&2; die "x86 classify failed"; }

RESULTS=()
for cpu in $CPUS; do
  cpuinfo=$(cpuinfo_for "$cpu")
  mount --bind "$REPO/tests/fixtures/pi/$cpuinfo" "$ROOT/proc/cpuinfo"
  log "QEMU_CPU=$cpu (/proc/cpuinfo: $cpuinfo): inspect $BUNDLE_IN_ROOT"
  t0=$(date +%s)
  in_root "$cpu" "$VENV_IN_ROOT/bin/instrument-ai" inspect "$BUNDLE_IN_ROOT" > "$OUT/inspect-$cpu.txt" 2>&1 \
    || { cat "$OUT/inspect-$cpu.txt" >&2; die "inspect (the bundle's self-test) failed on $cpu"; }
  grep -E '^ *self-test:' "$OUT/inspect-$cpu.txt" >&2 || die "inspect printed no self-test line on $cpu"
  log "QEMU_CPU=$cpu: run --source demo --fast --json --every-hop"
  in_root "$cpu" "$VENV_IN_ROOT/bin/instrument-ai" run --source demo --fast --json --every-hop \
    > "$OUT/run-$cpu.jsonl" 2> "$OUT/run-$cpu.err" || { cat "$OUT/run-$cpu.err" >&2; die "run failed on $cpu"; }
  log "QEMU_CPU=$cpu: classify --json --timeline demo.flac clip-44k-stereo.wav"
  in_root "$cpu" /bin/sh -c "cd /tmp/pi && exec $VENV_IN_ROOT/bin/instrument-ai classify --json --timeline \
    /tmp/pi/demo.flac clip-44k-stereo.wav" > "$OUT/classify-$cpu.jsonl" 2> "$OUT/classify-$cpu.err" \
    || { cat "$OUT/classify-$cpu.err" >&2; die "classify failed on $cpu"; }
  umount "$ROOT/proc/cpuinfo"
  python3 "$REPO/.ci/pi_compare.py" run "$OUT/run-x86.jsonl" "$OUT/run-$cpu.jsonl" | sed "s/^/[$cpu] /" >&2 \
    || die "run events on $cpu differ from x86"
  python3 "$REPO/.ci/pi_compare.py" classify "$OUT/classify-x86.jsonl" "$OUT/classify-$cpu.jsonl" \
    | sed "s/^/[$cpu] /" >&2 || die "classify events on $cpu differ from x86"
  RESULTS+=("$cpu: self-test passed, run and classify equal to x86 ($(( $(date +%s) - t0 )) s)")
done

log "passed: ${WHEEL_NAME}[device] on $SUITE $ARCH (Python 3.11)"
for line in "${RESULTS[@]}"; do log "  $line"; done
