#!/usr/bin/env bash
# Checks charts/image/Dockerfile's runtime stage against the real binaries: every
# shared library that `ldd` resolves for them must come from a Debian package the
# runtime stage installs (or from debian:12-slim itself). No Docker engine runs
# here, so this is how the image's package list is kept honest.
# Usage: image_runtime_deps_test.sh BINARY...
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dockerfile="$here/../../charts/image/Dockerfile"

# Packages named in the apt-get install lines of the last stage.
runtime_packages=$(awk '/^FROM /{stage++} {print stage "\t" $0}' "$dockerfile" \
  | awk -F'\t' -v last="$(grep -c '^FROM ' "$dockerfile")" '$1 == last {print $2}' \
  | sed -n '/apt-get install/,/rm -rf/p' | tr ' \\' '\n\n' \
  | grep -E '^[a-z0-9][a-z0-9.+-]+$' | grep -v -x -e apt-get -e install -e rm -e '&&' | sort -u)
# apt-get installs their dependencies too: the closure is what the image has.
runtime_closure=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
  --no-breaks --no-replaces --no-enhances $runtime_packages 2>/dev/null | grep -v '^ ' \
  | sed 's/:amd64$//' | sort -u)
# Essential packages every debian:12-slim has.
base_packages="libc6 libgcc-s1 libstdc++6 zlib1g libzstd1 liblzma5 libselinux1 libpcre2-8-0"

missing=0
for binary in "$@"; do
  while read -r library; do
    package=""
    # Merged /usr: packages register /usr/lib/..., ldd may print /lib/...
    for candidate in "$library" "/usr${library#/usr}" "$(readlink -f "$library")"; do
      package=$( (dpkg -S "$candidate" 2>/dev/null || true) | head -1 | cut -d: -f1)
      [[ -n "$package" ]] && break
    done
    if [[ -z "$package" ]]; then
      echo "FAIL: $(basename "$binary") needs $library, which no Debian package provides"
      missing=$((missing + 1))
    elif ! grep -qx "$package" <<<"$runtime_closure" && ! grep -qw "$package" <<<"$base_packages"; then
      echo "FAIL: $(basename "$binary") needs $library from $package, not installed by the runtime stage"
      missing=$((missing + 1))
    fi
  done < <(ldd "$binary" | awk '/=> \//{print $3} /^\t\/lib/{print $1}' | sort -u)
done
((missing == 0)) || exit 1
echo "image runtime stage provides every library of: $(for b in "$@"; do basename "$b"; done | xargs)"
