#!/usr/bin/env bash
# Set up aevae_jax on a fresh Debian/Ubuntu machine: Debian's Fashion-MNIST (the offline
# default data set), a virtual environment in .venv, and the package with its dev extra.
# Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")"

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] \
   && [ -z "${AEVAE_FASHION_MNIST_DIR:-}" ]; then
  if command -v apt-get >/dev/null; then
    sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "install.sh: installing Debian's dataset-fashion-mnist (about 31 MB)"
    $sudo apt-get update -qq && $sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    echo "install.sh: no apt-get here; put the four Fashion-MNIST IDX .gz files in a folder" \
         "and export AEVAE_FASHION_MNIST_DIR=that/folder (or let tfds download it)" >&2
  fi
fi

python3 -m venv .venv 2>/dev/null || { echo "install.sh: needs python3-venv (apt-get install python3-venv)" >&2; exit 1; }
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev]'
# tensorflow-datasets' copy of Fashion-MNIST, prepared once per machine from the IDX files
# (about 25 s on 2 cores; every later load reads a decoded copy in 0.2 s).
if [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] \
   || [ -n "${AEVAE_FASHION_MNIST_DIR:-}" ]; then
  log=$(.venv/bin/python -c "from aevae_jax.data.sources import load_dataset; load_dataset('fashion_mnist')" 2>&1) \
    || echo "install.sh: Fashion-MNIST not prepared now (the first run tries again): $(tail -n 1 <<<"$log")" >&2
fi
echo "install.sh: ready; .venv/bin/aevae --help"
