#!/usr/bin/env bash
# Install everything bsnas needs on a fresh Debian machine: the Fashion-MNIST package, a virtual
# environment in .venv with torch 2.14.1 / torchvision 0.29.1, and bsnas itself with its dev extra.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d /usr/share/datasets/fashion-mnist ]; then
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq dataset-fashion-mnist
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
.venv/bin/python -m pip install -q -e ".[dev]"
echo "bsnas installed in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
