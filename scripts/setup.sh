#!/usr/bin/env bash
# Installs what building and testing the enforcer needs on a fresh Debian 12 machine (root,
# Rust toolchain present); skips whatever is already there. Sourced by scripts/demo and
# scripts/test; safe to run on its own.
set -euo pipefail

log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

APT_PACKAGES=(
  # bpf-linker against Debian's LLVM 22 (pinned below; docs/building.md)
  llvm-22-dev libpolly-22-dev libzstd-dev zlib1g-dev
  # inspection of attached programs, namespaces
  bpftool iproute2 util-linux procps
  # the real components of the demo and the end-to-end tests
  prometheus-alertmanager prometheus
  # VM tests under other kernels
  qemu-system-x86 busybox-static kmod cpio
  # systemd-analyze verify of deploy/systemd (promtool comes with prometheus)
  systemd
  # the agent's image (cargo xtask image) and tests/tests/container.rs; crun, podman's
  # default runtime, refuses hybrid cgroup hosts, so the test runs runc
  podman runc
  # the image's musl build compiles ring's C and assembly (rustls, the integrity watchdog's
  # HTTPS client) with x86_64-linux-musl-gcc
  musl-tools
)

# `kubectl kustomize deploy/kubernetes` (tests/tests/container.rs); a kubectl from another
# source (Google's Cloud SDK packages one) conflicts with Debian's, so keep whichever is there.
command -v kubectl >/dev/null 2>&1 || APT_PACKAGES+=(kubernetes-client)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# kubernetes-validate for deploy/kubernetes (also brings PyYAML and jsonschema, which
# tests/tests/deploy_*.rs use).
if ! command -v kubernetes-validate >/dev/null 2>&1; then
  log "pip install kubernetes-validate"
  python3 -m pip install --quiet kubernetes-validate==1.37.0 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages kubernetes-validate==1.37.0
  if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
fi

# The eBPF crate is built with -Z build-std=core on stable (RUSTC_BOOTSTRAP=1 in
# .cargo/config.toml), which needs the standard library's sources.
if ! rustup component list --installed 2>/dev/null | grep -q '^rust-src'; then
  log "rustup component add rust-src"
  rustup component add rust-src
fi

# The agent's image holds a static binary: the musl target (cargo xtask image).
if ! rustup target list --installed 2>/dev/null | grep -qx 'x86_64-unknown-linux-musl'; then
  log "rustup target add x86_64-unknown-linux-musl"
  rustup target add x86_64-unknown-linux-musl
fi

# bpf-linker, pinned: the eBPF object is what this exact linker makes of the pinned aya crates
# with this LLVM major. A bpf-linker already on the machine is used only when it is this version
# and links this LLVM major; anything else (an earlier run's cache, another LLVM) is replaced.
BPF_LINKER_VERSION=0.13.0
LLVM_MAJOR=22
export PATH="$HOME/.cargo/bin:$PATH"
bpf_linker_ok() {
  command -v bpf-linker >/dev/null 2>&1 || return 1
  [[ $(bpf-linker --version 2>/dev/null) == "bpf-linker $BPF_LINKER_VERSION" ]] || return 1
  # The LLVM it was built against: the shared library it loads (a static link names none).
  local linked
  linked=$(ldd "$(command -v bpf-linker)" 2>/dev/null | sed -nE 's/.*libLLVM(-|\.so\.)([0-9]+).*/\2/p' | head -n1)
  [[ $linked == "$LLVM_MAJOR" ]]
}
if ! bpf_linker_ok; then
  log "cargo install bpf-linker $BPF_LINKER_VERSION against LLVM $LLVM_MAJOR (about 2 minutes;" \
    "found: $(bpf-linker --version 2>/dev/null || echo none))"
  PATH=/usr/lib/llvm-$LLVM_MAJOR/bin:$PATH cargo install bpf-linker --force --locked \
    --version "=$BPF_LINKER_VERSION" --no-default-features --features "llvm-$LLVM_MAJOR"
  bpf_linker_ok || { log "bpf-linker $BPF_LINKER_VERSION (LLVM $LLVM_MAJOR) still not usable"; exit 1; }
fi

if ! command -v cargo-nextest >/dev/null 2>&1; then
  log "cargo install cargo-nextest"
  cargo install cargo-nextest --locked
fi
