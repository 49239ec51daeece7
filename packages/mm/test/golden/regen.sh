#!/usr/bin/env bash
# Regenerate the golden outputs from the real kernel of this machine:
#   MMORACLE=/path/to/mmoracle [RUNS=10] bash regen.sh [DIR]
# DIR is a directory of scenarios with the settings of one kernel (default: this one; see
# README.md for which is which). With RUNS > 1 every scenario runs that many times and a
# scenario whose outputs differ is reported (its golden is the first run's output).
# mmoracle is a reference program that runs a scenario on the real kernel and prints the page
# states; it must run as root (it reads /proc/PID/pagemap, /proc/kpageflags, /proc/kpagecount).
# Writes NAME.golden for every NAME.mm here, and kernel.json with the kernel settings the outputs
# depend on (the simulator runs the goldens with those settings).
set -euo pipefail
cd "$(dirname "$0")"
if [[ -z "${MMORACLE:-}" || ! -x "$MMORACLE" ]]; then
  echo "usage: MMORACLE=/path/to/mmoracle [RUNS=10] bash regen.sh [DIR]" >&2
  exit 2
fi
MMORACLE=$(realpath "$MMORACLE")
cd "${1:-.}"
runs=${RUNS:-1}

thp=$(sed -n 's/.*\[\(always\|madvise\|never\)\].*/\1/p' /sys/kernel/mm/transparent_hugepage/enabled)
use_zero_page=$(cat /sys/kernel/mm/transparent_hugepage/use_zero_page)
# Whether read faults map the zero page: ask the kernel (some hosts boot with it disabled).
if printf 'mmap z 16K\ntouch z 0 4K r\ndump z\n' | "$MMORACLE" | grep -q '^dump p z \[0,1) zero$'; then
  zero_page=true
else
  zero_page=false
fi
# fault_around_bytes lives in debugfs; where that is not mounted, the kernel default applies.
fault_around_bytes=$(cat /sys/kernel/debug/fault_around_bytes 2>/dev/null || echo 65536)

cat > kernel.json <<JSON
{
  "uname": "$(uname -r)",
  "thp": "$thp",
  "use_zero_page": $use_zero_page,
  "zero_page": $zero_page,
  "fault_around_bytes": $fault_around_bytes
}
JSON

for mm in *.mm; do
  "$MMORACLE" < "$mm" > "${mm%.mm}.golden"
  for ((i = 2; i <= runs; i++)); do
    if ! "$MMORACLE" < "$mm" | cmp -s - "${mm%.mm}.golden"; then
      echo "${mm%.mm}: run $i differs from run 1" >&2
    fi
  done
  echo "${mm%.mm}.golden"
done
