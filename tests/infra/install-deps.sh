#!/usr/bin/env bash
# Installs the system services the integration tests start on loopback (sshd, a 2-node SLURM cluster, munge).
# Idempotent: does nothing when every package is already installed. Needs root (or sudo).
set -euo pipefail

PACKAGES=(openssh-server openssh-client openssh-sftp-server slurmctld slurmd slurm-client munge procps)
# torch.compile on CPU (tests/e2e/test_torch_compile.py): inductor builds its kernels with a C++ compiler
PACKAGES+=(g++)

missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done
if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
# Daemons are started by the test fixtures, never by the package scripts.
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
