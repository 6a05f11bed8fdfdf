#!/usr/bin/env bash
# Installs Triton's perf_analyzer, unmodified, into $1 (bin/perf_analyzer, a wrapper that sets
# the library path, and lib/).
#
# Why these pieces: PyPI's `perf-analyzer` package is an empty placeholder; the binary last
# shipped inside the tritonclient wheel, and 2.51.0 is the newest of those that runs on glibc
# 2.36 (Debian 12; 2.52+ need glibc 2.38). It links libb64 (Debian's libb64-0d) and
# libcudart.so.12 (NVIDIA's PyPI wheel; loaded at start even where no GPU is used). Every
# download is pinned by hash.
set -euo pipefail

DEST=${1:?usage: install_perf_analyzer.sh DEST}
PIP=${PIP:-python3 -m pip}
TRITONCLIENT=tritonclient==2.51.0
TRITONCLIENT_SHA=c485bb0123bdf310f90bc8b03d3489b28df2ffed55b30c7eee0b795b48113d52
CUDART=nvidia-cuda-runtime-cu12==12.9.79
CUDART_SHA=25bba2dfb01d48a9b59ca474a1ac43c6ebf7011f1b0b8cc44f54eb6ac48a96c3
LIBB64_DEB_SHA=b0e1d6fde8bdccc18c3884144aede064dc82464dd4777275fa80e74c05583e82

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cat >"$work/requirements.txt" <<EOF
$TRITONCLIENT --hash=sha256:$TRITONCLIENT_SHA
$CUDART --hash=sha256:$CUDART_SHA
EOF
$PIP download -q --no-deps --only-binary=:all: --platform manylinux2014_x86_64 \
  --python-version 3.11 --require-hashes -r "$work/requirements.txt" -d "$work/wheels"

(cd "$work" && apt-get download -q libb64-0d=1.2-5+b1 2>/dev/null)
echo "$LIBB64_DEB_SHA  $(ls "$work"/libb64-0d_*.deb)" | sha256sum --check --quiet

mkdir -p "$work/out/bin" "$work/out/lib"
unzip -q -j "$work"/wheels/tritonclient-*.whl '*/data/bin/perf_analyzer' -d "$work/out/bin"
mv "$work/out/bin/perf_analyzer" "$work/out/bin/perf_analyzer.real"
unzip -q -j "$work"/wheels/nvidia_cuda_runtime_cu12-*.whl '*/libcudart.so.12' -d "$work/out/lib"
dpkg-deb -x "$work"/libb64-0d_*.deb "$work/deb"
cp -a "$work"/deb/usr/lib/x86_64-linux-gnu/libb64.so.0d* "$work/out/lib/"
cat >"$work/out/bin/perf_analyzer" <<'EOF'
#!/bin/sh
here=$(dirname "$(readlink -f "$0")")
LD_LIBRARY_PATH="$here/../lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$here/perf_analyzer.real" "$@"
EOF
chmod +x "$work/out/bin/perf_analyzer" "$work/out/bin/perf_analyzer.real"
"$work/out/bin/perf_analyzer" --version >/dev/null

rm -rf "$DEST"
mkdir -p "$(dirname "$DEST")"
mv "$work/out" "$DEST"
echo "perf_analyzer installed in $DEST/bin"
