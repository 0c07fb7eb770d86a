#!/usr/bin/env bash
# Puts scikit-learn's handwritten digits (digits.csv.gz: 1797 8x8 images, 57 KB) at
# data/digits.csv.gz for `train --dataset digits`. The file comes from Debian's python3-sklearn
# package, downloaded and unpacked here without installing it: installing python3-sklearn pulls
# in libboost1.74-dev (through scipy's pythran), which conflicts with the libboost1.81-dev gpurun
# builds with. An installed python3-sklearn is used as it is. Idempotent.
#   scripts/fetch_digits.sh [DEST]      (default: data/digits.csv.gz in the repository)
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-data/digits.csv.gz}
member=usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz

if [ -s "$dest" ] && gzip -t "$dest" 2>/dev/null; then
  echo "digits: $dest present"
  exit 0
fi
mkdir -p "$(dirname "$dest")"
if [ -s "/$member" ]; then
  cp "/$member" "$dest"
  echo "digits: copied /$member to $dest"
  exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
download() { (cd "$tmp" && apt-get download -q python3-sklearn >/dev/null 2>&1); }
if ! download; then
  # No package lists yet (a fresh machine where every build package was already present).
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q >/dev/null
  download || {
    echo "digits: error: cannot download Debian's python3-sklearn (apt-get download failed); " \
      "check the apt sources, or pass train --data-file PATH to a digits.csv.gz" >&2
    exit 1
  }
fi
deb=$(ls "$tmp"/python3-sklearn_*.deb)
dpkg-deb --fsys-tarfile "$deb" | tar -xO "./$member" >"$tmp/digits.csv.gz"
gzip -t "$tmp/digits.csv.gz"
mv "$tmp/digits.csv.gz" "$dest"
echo "digits: unpacked $(basename "$deb"):/$member to $dest"
