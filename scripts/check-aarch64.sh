#!/usr/bin/env bash
# pocket-ggml built and run as an aarch64 program on this x86_64 machine, its results compared with x86.
#
# An arm64 Debian bookworm root filesystem run under qemu-user through binfmt_misc (recipe and pitfalls:
# ../shared/docs/arm-emulation.md). For each ARM build preset (scripts/ggml-preset.sh; default "pi4 phone":
# baseline NEON run as a Cortex-A72, and armv8.6-a+dotprod+fp16+i8mm run on qemu's "max" CPU so that the
# dotprod/i8mm kernels execute) it cross-compiles ggml-python on this host (Debian's aarch64-linux-gnu
# gcc; ggml-python loads its libggml*.so with ctypes, so the wheel holds no CPython extension), installs
# it and this working tree in the root filesystem, then:
#   1. checks the ggml CPU features of the build;
#   2. runs the F32 stage parity tests of issue #3 on english_2m (tests/test_parity.py: every FlowLM stage
#      teacher-forced at temp 0 and 0.3) against reference dumps made on x86 by pocket-tts (the reference
#      is not installed on the ARM side); free-running generation and the EOS frame are checked by step 3,
#      which compares ARM with x86, whose free run and EOS frame the test suite compares with the reference;
#   3. quantizes synthetic english_2m to F32 and Q4_K_M and synthesizes a fixed text at temperature 0
#      with a voice cloned from the first second of ../shared's wav, then runs it teacher-forced on x86's
#      files; the same with x86's english Q4_K_M GGUF (the default model's mix: only english's dimensions
#      hold Q4_K matrices, and so run the Q4_K and repacked kernels); compared with the same on x86
#      (pocket_ggml.bench.crossarch): same frame count, teacher-forced latents and audio SNR >= 60 dB for
#      F32 and >= 40 dB for the quantized types, free-running audio >= 60 dB for F32 (quantized: reported
#      beside x86's own noise floor, see crossarch's docstring);
#   4. synthesizes english Q4_K_M within a 256 MB memory cgroup and english_2m within 128 MB (qemu's own
#      memory included), as x86 does natively.
# x86 synthesizes every config and type (english F32 and Q8_0 too) for its own checks and budgets.
# Correctness only: emulated speed says nothing about a real ARM CPU.
#
# Needs root (binfmt_misc, chroot, mounts, cgroups). Where it cannot run it fails loudly unless
# POCKET_SKIP_AARCH64=1. It undoes every mount and registration it made. The root filesystem (with a
# venv per preset holding ggml-python and the dependencies) and the built ggml-python wheels are kept in
# POCKET_AARCH64_CACHE (default ~/.cache/pocket-ggml/aarch64); without them it rebuilds them (apt
# installs the cross compiler when it is missing). The working tree is installed afresh every run.
#
# Environment: POCKET_HOST_PYTHON (x86 interpreter with pocket-ggml and the reference; default .venv),
# POCKET_AARCH64_PRESETS (default "pi4 phone"), POCKET_AARCH64_CACHE, POCKET_SKIP_AARCH64.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
SHARED=$(cd "$REPO/.." && pwd)/shared
CACHE=${POCKET_AARCH64_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pocket-ggml/aarch64}
HOST_PY=${POCKET_HOST_PYTHON:-$REPO/.venv/bin/python}
PRESETS=${POCKET_AARCH64_PRESETS:-pi4 phone}
# no compiler inside: the wheels are cross-built; libgomp1 is the OpenMP runtime they link
ROOTFS_RECIPE="bookworm arm64 minbase python3 python3-venv libgomp1 ca-certificates"
ROOTFS=$CACHE/rootfs-bookworm
GGML_REQ=$(grep -o '"ggml-python==[^"]*"' "$REPO/pyproject.toml" | tr -d '"')
MIRROR=${POCKET_DEBIAN_MIRROR:-http://deb.debian.org/debian}
BINFMT=/proc/sys/fs/binfmt_misc
START=$SECONDS

log() { printf '[check-aarch64 %4ds] %s\n' $((SECONDS - START)) "$*" >&2; }

cannot_run() {
    printf '\n%s\n' "################################################################################" >&2
    printf 'check-aarch64: CANNOT RUN THE AARCH64 CHECK: %s\n' "$1" >&2
    if [ "${POCKET_SKIP_AARCH64:-}" = 1 ]; then
        printf 'check-aarch64: skipped because POCKET_SKIP_AARCH64=1: ARM builds are NOT verified.\n' >&2
        printf '%s\n\n' "################################################################################" >&2
        exit 0
    fi
    printf 'check-aarch64: set POCKET_SKIP_AARCH64=1 to run without it.\n' >&2
    printf '%s\n\n' "################################################################################" >&2
    exit 1
}

[ "$(id -u)" = 0 ] || cannot_run "not root (binfmt_misc, chroot and cgroups need root)"
[ -x "$HOST_PY" ] || cannot_run "no x86 interpreter at $HOST_PY (set POCKET_HOST_PYTHON)"
[ -n "$GGML_REQ" ] || cannot_run "no ggml-python pin in pyproject.toml"
[ -d "$SHARED/assets" ] || cannot_run "$SHARED/assets is missing"

apt_install() {
    local get=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends)
    "${get[@]}" "$@" >/dev/null || { apt-get update -q >/dev/null && "${get[@]}" "$@" >/dev/null; } ||
        cannot_run "apt-get install $* failed"
}
if ! command -v qemu-aarch64-static >/dev/null || ! command -v debootstrap >/dev/null; then
    log "installing qemu-user-static and debootstrap"
    apt_install qemu-user-static debootstrap
fi

# --- ggml-python for aarch64, cross-compiled on this host, one wheel per preset, cached ---------------------
# The flags are the preset's (scripts/ggml-preset.sh) plus the cross compiler; _PYTHON_HOST_PLATFORM tags the
# wheel linux_aarch64. CMake and Ninja come from the host so that the build pulls no platform wheel of them.
CROSS_ARGS="-DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR=aarch64"
CROSS_ARGS+=" -DCMAKE_C_COMPILER=aarch64-linux-gnu-gcc -DCMAKE_CXX_COMPILER=aarch64-linux-gnu-g++"
wheel_dir() {  # wheel_dir PRESET: the cache folder of its wheel, keyed by the pin and the flags
    local args
    args=$(bash "$REPO/scripts/ggml-preset.sh" "$1")
    echo "$CACHE/wheels/$1-$(printf '%s %s %s' "$GGML_REQ" "$args" "$CROSS_ARGS" | sha1sum | cut -c1-12)"
}
build_wheels() {
    local preset dir args
    for preset in $PRESETS; do
        dir=$(wheel_dir "$preset")
        ls "$dir"/ggml_python-*-linux_aarch64.whl >/dev/null 2>&1 && continue
        if ! command -v aarch64-linux-gnu-g++ >/dev/null || ! command -v cmake >/dev/null || ! command -v ninja >/dev/null; then
            log "installing the aarch64 cross compiler, CMake and Ninja"
            apt_install g++-aarch64-linux-gnu cmake ninja-build
        fi
        args=$(bash "$REPO/scripts/ggml-preset.sh" "$preset")
        log "$preset: cross-building $GGML_REQ with CMAKE_ARGS=$args"
        rm -rf "$dir.part"
        mkdir -p "$CACHE/wheels"
        CMAKE_ARGS="$args $CROSS_ARGS" _PYTHON_HOST_PLATFORM=linux-aarch64 "$HOST_PY" -m pip wheel -q --no-deps \
            --no-binary ggml-python --no-cache-dir --disable-pip-version-check -w "$dir.part" "$GGML_REQ" \
            >"$CACHE/build-$preset.log" 2>&1 || { tail -30 "$CACHE/build-$preset.log" >&2; return 1; }
        ls "$dir.part"/ggml_python-*-linux_aarch64.whl >/dev/null || { echo "check-aarch64: no aarch64 wheel" >&2; return 1; }
        mv "$dir.part" "$dir"
        log "$preset: wheel built"
    done
}

# --- binfmt: mount and register only what is not there, and undo exactly that ---------------------------
MOUNTED=()      # mount points to unmount, innermost last
MOUNTED_BINFMT=0
REGISTERED=0
WHEELS_PID=""   # the wheel builds and the x86 side, run beside the root filesystem's set-up
X86_PID=""
cleanup() {
    local rc=$?
    [ -z "$WHEELS_PID" ] || wait "$WHEELS_PID" 2>/dev/null || true
    [ -z "$X86_PID" ] || wait "$X86_PID" 2>/dev/null || true
    for ((i = ${#MOUNTED[@]} - 1; i >= 0; i--)); do
        umount -R "${MOUNTED[i]}" 2>/dev/null || umount -R -l "${MOUNTED[i]}" || true
    done
    [ "$REGISTERED" = 1 ] && { echo -1 >"$BINFMT/qemu-aarch64" || true; }
    [ "$MOUNTED_BINFMT" = 1 ] && { umount "$BINFMT" || true; }
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ! mountpoint -q "$BINFMT"; then
    mount -t binfmt_misc none "$BINFMT" 2>/dev/null || cannot_run "binfmt_misc cannot be mounted here"
    MOUNTED_BINFMT=1
fi
if [ ! -e "$BINFMT/qemu-aarch64" ]; then
    conf=/usr/lib/binfmt.d/qemu-aarch64.conf
    [ -f "$conf" ] || cannot_run "$conf is missing (qemu-user-static)"
    cat "$conf" >"$BINFMT/register" || cannot_run "cannot register qemu-aarch64 with binfmt_misc"
    REGISTERED=1
fi
grep -q '^flags:.*F' "$BINFMT/qemu-aarch64" || cannot_run "qemu-aarch64 is registered without the F (fix binary) flag"

# --- the x86 side: what the ARM builds are compared with --------------------------------------------------
# The stage tests only: the free run and the EOS frame clone the voice from the whole wav, which emulation
# makes minutes long; the syntheses below check both against x86.
PARITY_TESTS="english_2m and stages"
TOKENIZER=assets/tokenizer.model
VOICE=assets/voices/speaker-48k.wav
# the Mimi encoder dominates the emulated syntheses: one second of the wav clones the voice
VOICE_SECONDS=1.0
# english_2m's dimensions hold no Q4_K matrix: english Q4_K_M (the default model's mix) runs the Q4_K and
# repacked kernels, on x86's GGUF (quantizing english under qemu took longer than synthesizing with it).
# english_2m Q8_0 is not emulated: english_2m's Q4_K_M mix is Q8_0 in all but its encoder (Q6_K) and a
# few F16 matrices, so it runs the Q8_0 kernels and ARM's Q8_0 quantizer already.
EMULATED_MODELS=english_2m_2026-10:F32,english_2m_2026-10:Q4_K_M,english:Q4_K_M
ON_X86_GGUF=english:Q4_K_M
x86_side() {
    log "x86: synthesis of every config and type"
    "$HOST_PY" -m pocket_ggml.bench.crossarch synth --out "$WORK/x86" --voice-seconds "$VOICE_SECONDS" \
        --tokenizer "$SHARED/$TOKENIZER" --voice "$SHARED/$VOICE" 2>"$WORK/x86.log" || { cat "$WORK/x86.log" >&2; return 1; }
    log "x86: reference dumps and the F32 stage parity of english_2m"
    (cd "$REPO" && POCKET_PARITY_DIR="$WORK/parity-x86" CI=true "$HOST_PY" -m pytest -q -p no:cacheprovider \
        tests/test_parity.py -k "$PARITY_TESTS") | tail -3
    touch "$WORK/x86.done"
}
wait_for_x86() {  # in a preset's job: until the x86 side is done; fails if it ended without finishing
    until [ -e "$WORK/x86.done" ]; do
        kill -0 "$X86_PID" 2>/dev/null || [ -e "$WORK/x86.done" ] || { echo "check-aarch64: the x86 side failed" >&2; return 1; }
        sleep 2
    done
}

# The wheels and the x86 side run beside the root filesystem's set-up (emulated, one core) and the
# presets' installs.
WORK=$CACHE/work
rm -rf "$WORK"
mkdir -p "$WORK"
build_wheels &
WHEELS_PID=$!
x86_side &
X86_PID=$!

# --- the arm64 root filesystem, cached ----------------------------------------------------------------
if [ "$(cat "$ROOTFS/.pocket-ggml-rootfs" 2>/dev/null)" != "$ROOTFS_RECIPE" ]; then
    log "building the arm64 root filesystem in $ROOTFS"
    rm -rf "$ROOTFS"
    mkdir -p "$CACHE"
    debootstrap --arch=arm64 --foreign --variant=minbase \
        --include=python3,python3-venv,libgomp1,ca-certificates \
        bookworm "$ROOTFS" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 ||
        { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
    chroot "$ROOTFS" /debootstrap/debootstrap --second-stage >>"$CACHE/debootstrap.log" 2>&1 ||
        { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
    echo "$ROOTFS_RECIPE" >"$ROOTFS/.pocket-ggml-rootfs"
fi
log "root filesystem ready: $ROOTFS"
wait "$WHEELS_PID" || { WHEELS_PID=""; echo "check-aarch64: building the aarch64 wheels failed" >&2; exit 1; }
WHEELS_PID=""

bind() {  # bind SRC DST [ro]
    mkdir -p "$2"
    mount --bind "$1" "$2"
    MOUNTED+=("$2")
    [ "${3:-}" = ro ] && mount -o remount,bind,ro "$2"
    return 0
}
mount -t proc proc "$ROOTFS/proc" && MOUNTED+=("$ROOTFS/proc")
mount -t sysfs sys "$ROOTFS/sys" && MOUNTED+=("$ROOTFS/sys")
mount --rbind /dev "$ROOTFS/dev" && mount --make-rslave "$ROOTFS/dev" && MOUNTED+=("$ROOTFS/dev")
mkdir -p "$CACHE/pip" "$CACHE/wheels"
bind "$CACHE/pip" "$ROOTFS/root/.cache/pip"
bind "$CACHE/wheels" "$ROOTFS/wheels"
bind "$SHARED" "$ROOTFS/opt/shared" ro
cp -L /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
# registry traffic may pass a TLS-intercepting proxy: trust what the host trusts
cp /etc/ssl/certs/ca-certificates.crt "$ROOTFS/etc/ssl/certs/host-ca-certificates.crt"

in_arm() {  # in_arm QEMU_CPU COMMAND: run a bash command inside the arm64 root filesystem
    QEMU_CPU=$1 chroot "$ROOTFS" /usr/bin/env -i HOME=/root LANG=C.UTF-8 QEMU_CPU="$1" \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        PIP_CERT=/etc/ssl/certs/host-ca-certificates.crt PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180 \
        CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" CI=true GGML_NO_BACKTRACE=1 HF_HUB_OFFLINE=1 \
        bash -euo pipefail -c "$2"
}

# --- this working tree ----------------------------------------------------------------------------------
rm -rf "$ROOTFS/opt/pocket-ggml"
mkdir -p "$ROOTFS/opt/pocket-ggml"
(cd "$REPO" && git ls-files -z --cached --others --exclude-standard | xargs -0 tar -cf - --no-recursion) |
    tar -xf - -C "$ROOTFS/opt/pocket-ggml"
bind "$WORK" "$ROOTFS/opt/work"
# pure Python: built here as a wheel, for the ARM venvs to unpack
"$HOST_PY" -m pip wheel -q --no-deps --disable-pip-version-check -w "$WORK/package" "$ROOTFS/opt/pocket-ggml" \
    >"$WORK/package.log" 2>&1 || { cat "$WORK/package.log" >&2; exit 1; }
# the ARM venvs' requirements: pyproject's dependencies and pytest, shell-quoted
DEPENDENCIES=$("$HOST_PY" -c 'import shlex, sys, tomllib
print(shlex.join(tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"] + ["pytest"]))' "$REPO/pyproject.toml")

BUDGET_TEXT="The harbour lights came on one by one as the fishing boats returned."
budgets() {  # budgets OUT_DIR SHARED_DIR CLONE POCKET_SPEAK...: synthesis within memory cgroups
    # english Q4_K_M in 256 MB and english_2m in 128 MB with a saved voice state (the edge use); with
    # CLONE=1 also english Q4_K_M in 256 MB cloning the voice from the wav (resampler, Mimi encoder)
    local out=$1 shared=$2 clone=$3 config limit voice
    shift 3
    while read -r config limit voice; do
        [ -n "$config" ] || continue
        "$HOST_PY" -m pocket_ggml.bench.crossarch budget --limit-mb "$limit" -- "$@" -q --model \
            "$out/$config-Q4_K_M.gguf" --voice "$voice" --text "$BUDGET_TEXT" -o "$out/budget.wav" </dev/null
    done <<EOF
english 256 $out/english-Q4_K_M-voice.safetensors
english_2m_2026-10 128 $out/english_2m_2026-10-Q4_K_M-voice.safetensors
$([ "$clone" = 1 ] && echo "english 256 $shared/$VOICE")
EOF
}

check_preset() {  # check_preset PRESET: install and check one ARM build (runs in the background)
    local preset=$1 cpu expect_on expect_off wheels venv features f
    case $preset in
        pi4) cpu=cortex-a72 expect_on="neon" expect_off="dotprod matmul_int8 sve" ;;
        pi5) cpu=cortex-a76 expect_on="neon dotprod" expect_off="matmul_int8 sve" ;;
        phone) cpu=max expect_on="neon dotprod matmul_int8" expect_off="" ;;
        *) echo "check-aarch64: unknown ARM preset $preset" >&2; return 2 ;;
    esac
    wheels=/wheels/$(basename "$(wheel_dir "$preset")")
    venv=/opt/venv-$preset
    # pip resolving and unpacking under emulation takes minutes: the venv with ggml-python and the
    # dependencies is kept in the root filesystem, keyed by the wheel and pyproject's requirements
    if [ "$(cat "$ROOTFS$venv/.pocket-ggml-deps" 2>/dev/null)" != "$wheels $DEPENDENCIES" ]; then
        log "$preset: a venv with ggml-python and the dependencies (QEMU_CPU=$cpu)"
        in_arm "$cpu" "rm -rf $venv && python3 -m venv $venv && $venv/bin/pip install -q $wheels/ggml_python-*.whl &&
            $venv/bin/pip install -q $DEPENDENCIES"
        echo "$wheels $DEPENDENCIES" >"$ROOTFS$venv/.pocket-ggml-deps"
    fi
    log "$preset: installing this working tree's pocket-ggml (QEMU_CPU=$cpu)"
    in_arm "$cpu" "$venv/bin/pip install -q --no-deps --force-reinstall /opt/work/package/pocket_ggml-*.whl"
    features=$(in_arm "$cpu" "$venv/bin/pocket-bench --info")
    log "$preset: $(echo "$features" | tr '\n' ';')"
    for f in $expect_on; do
        [[ "${features%%|*} " == *" ${f^^} "* ]] || { echo "check-aarch64: the $preset build lacks $f" >&2; return 1; }
    done
    for f in $expect_off; do
        [[ "${features%%|*} " != *" ${f^^} "* ]] || { echo "check-aarch64: the $preset build uses $f" >&2; return 1; }
    done

    wait_for_x86
    log "$preset: F32 stage parity of english_2m against the reference's dumps made on x86"
    mkdir -p "$WORK/parity-$preset"
    cp -r "$WORK/parity-x86/dumps" "$WORK/parity-$preset/"
    in_arm "$cpu" "cd /opt/pocket-ggml && PATH=$venv/bin:\$PATH POCKET_PARITY_DIR=/opt/work/parity-$preset \
        python -m pytest -q -p no:cacheprovider --durations=3 tests/test_parity.py -k '$PARITY_TESTS'"

    log "$preset: synthesis of $EMULATED_MODELS"
    in_arm "$cpu" "$venv/bin/python -m pocket_ggml.bench.crossarch synth --out /opt/work/$preset \
        --models $EMULATED_MODELS --teachers-gguf $ON_X86_GGUF --voice-seconds $VOICE_SECONDS \
        --tokenizer /opt/shared/$TOKENIZER --voice /opt/shared/$VOICE --teacher /opt/work/x86"
    "$HOST_PY" -m pocket_ggml.bench.crossarch compare "$WORK/x86" "$WORK/$preset" --label "aarch64 $preset" \
        --models "$EMULATED_MODELS"

    log "$preset: memory budgets (qemu's own memory counted)"
    budgets "/opt/work/$preset" /opt/shared 0 env QEMU_CPU="$cpu" chroot "$ROOTFS" "$venv/bin/pocket-speak"
    log "$preset: passed"
}

# The presets run side by side (emulated Python is one thread), each into its log.
pids=()
for preset in $PRESETS; do
    (set -euo pipefail; check_preset "$preset") >"$WORK/check-$preset.log" 2>&1 &
    pids+=($!)
done
failed=""
i=0
for preset in $PRESETS; do
    wait "${pids[i]}" || failed="$failed $preset"
    i=$((i + 1))
    printf '\n===== aarch64 %s =====\n' "$preset" >&2
    grep -v "holds synthetic weights" "$WORK/check-$preset.log" >&2 || true
done
wait "$X86_PID" || failed="$failed x86"
X86_PID=""
[ -z "$failed" ] || { echo "check-aarch64: FAILED on$failed" >&2; exit 1; }

log "x86: memory budgets"
budgets "$WORK/x86" "$SHARED" 1 "$(dirname "$HOST_PY")/pocket-speak"
log "passed: presets $PRESETS"
