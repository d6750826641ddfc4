#!/usr/bin/env bash
# vlm-probes: set up .venv when needed, then run every notebook or the tests.
#
#   ./run_all.sh [OPTIONS]  set up, then execute every notebook and regenerate figures/
#   ./run_all.sh --test     set up, then run the test suite (extra args go to pytest)
#   ./run_all.sh --setup    set up only
#
# OPTIONS go to the notebook runner (python -m analysis --help), e.g.
#   --only 00_quickstart,01   --params notebooks/params/tiny.yaml   -p model zoo:shapes-llava-local
#   --model tiny:qwen2_vl     --device cpu                           --list
#
# Torch: a torch already importable by $PYTHON (conda or a GPU build) is kept and shared with
# the venv; otherwise the tested pin below is installed.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON="${PYTHON:-python3}"
VENV=".venv"
TORCH_PIN="torch==2.14.1 torchvision==0.29.1"
UV_PIN="uv==0.13.9"
KERNEL_NAME="vlm-probes"

setup() {
    if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        echo "error: $PYTHON is not Python 3.11 or newer; set PYTHON=/path/to/python3.11" >&2
        exit 2
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        if "$PYTHON" -c 'import torch, torchvision' 2>/dev/null; then
            echo "[setup] creating $VENV sharing the torch already installed for $PYTHON"
            "$PYTHON" -m venv --system-site-packages "$VENV"
        elif "$PYTHON" -m pip --version >/dev/null 2>&1; then
            echo "[setup] creating $VENV"
            "$PYTHON" -m venv --without-pip "$VENV"  # uv puts pip in with the rest (install_packages)
        else
            echo "[setup] creating $VENV"
            "$PYTHON" -m venv "$VENV"
        fi
    fi
    # The browser test (tests/test_browser.py) drives Debian's chromium through Playwright; no
    # browser is ever downloaded. Installed through apt when missing (as root), needed for --test;
    # apt runs in the background while the Python packages install and is waited for below.
    local apt_pid=""
    if [ "$mode" != "run" ] && [ ! -x /usr/bin/chromium ] \
        && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "[setup] installing Debian's chromium (apt-get, in the background) for the browser test"
        ( export DEBIAN_FRONTEND=noninteractive
          apt-get update -qq && apt-get install -y -qq chromium ) >"$VENV/apt-chromium.log" 2>&1 &
        apt_pid=$!
    fi
    install_packages
    if [ -n "$apt_pid" ] && ! wait "$apt_pid"; then
        echo "[setup] apt-get install chromium failed; its output: $VENV/apt-chromium.log" >&2
    fi
    if [ "$mode" != "run" ] && [ ! -x /usr/bin/chromium ]; then
        local hint="the browser test needs /usr/bin/chromium: run 'sudo apt-get install chromium' (Debian's package)"
        if [ "$mode" = "test" ]; then
            echo "error: $hint" >&2
            exit 2
        fi
        echo "[setup] warning: $hint" >&2
    fi
}

# Installs torch (unless the venv shares one) and the project at the locked versions, once per
# change of pyproject.toml, run_all.sh or requirements-lock.txt. A venv that owns its packages is
# filled by uv (from PyPI, pinned below), which fetches and unpacks the ~180 wheels in parallel:
# 25 to 45 s for what pip took 127 s on 2 cores, 5.5 GB of torch's CUDA wheels included. uv reads the
# indexes pip is configured with (pip config, PIP_* variables) and, like pip, takes the best match
# across them. A venv sharing a torch installed outside it stays with pip, which sees that torch
# (uv does not look at system site-packages and would install a second one).
# Bytecode: Python caches each module on its first import (run_all.sh lifts PYTHONDONTWRITEBYTECODE),
# ~6,500 of the venv's 17,600 modules in this project's runs (compiling all of them up front took
# 48 s on 2 cores); the end of the install imports the common ones.
install_packages() {
    local stamp="$VENV/.vlm-probes-installed"
    local want
    want="$(cat pyproject.toml run_all.sh requirements-lock.txt | "$VENV/bin/python" -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return
    fi
    local project=(-c requirements-lock.txt -e ".[notebooks,test]")
    if grep -q '^include-system-site-packages = true' "$VENV/pyvenv.cfg"; then
        echo "[setup] installing vlm-probes with extras [notebooks,test] at the tested versions (pip, requirements-lock.txt)"
        pip install --quiet "${project[@]}"
    else
        echo "[setup] installing $TORCH_PIN and vlm-probes with extras [notebooks,test] at the tested versions (uv, requirements-lock.txt)"
        pip install --quiet "$UV_PIN"
        local indexes=() value
        value="$(pip_setting index-url)"
        if [ -n "$value" ]; then indexes+=(--index-url "$value"); fi
        for value in $(pip_setting extra-index-url); do indexes+=(--extra-index-url "$value"); done
        for value in $(pip_setting find-links); do indexes+=(--find-links "$value"); done
        "$VENV/bin/uv" pip install --quiet --python "$VENV/bin/python" --index-strategy unsafe-best-match \
            "${indexes[@]}" pip $TORCH_PIN "${project[@]}"
    fi
    "$VENV/bin/python" -m ipykernel install --sys-prefix --name "$KERNEL_NAME" \
        --display-name "Python (vlm-probes)" >/dev/null
    # Python caches a module's bytecode on its first import: the notebook and test tools (no torch) are
    # imported here side by side with torch, torchvision and transformers (the line below), so that the
    # first kernels, JupyterLab and test workers find them compiled. torchvision (loaded by every image
    # processor) brings torch._dynamo and sympy: compiled here, where it evens out the two imports (16
    # and 19 s on 2 cores), a fresh venv's `import analysis` takes 9.6 s instead of 16.6 s.
    "$VENV/bin/python" -c 'import matplotlib.pyplot, seaborn, pandas, scipy.stats, sklearn.linear_model, yaml, tqdm
import nbformat, nbclient, papermill, ipykernel.kernelapp, ipywidgets, jupyter_server.serverapp, jupyterlab.labapp
import playwright.sync_api' &
    local tools=$!
    local versions
    versions="$("$VENV/bin/python" -c 'import torch, torchvision, transformers; print("torch", torch.__version__, "| transformers", transformers.__version__)')"
    wait "$tools"
    echo "$want" > "$stamp"
    echo "[setup] done: $versions"
}

# pip for the venv: its own, or $PYTHON's driving the venv (a venv created without pip).
pip() {
    if "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
        "$VENV/bin/python" -m pip "$@"
    else
        "$PYTHON" -m pip --python "$VENV/bin/python" "$@"
    fi
}

# The value pip would use for one of its settings (config files and PIP_* variables; the last
# scope listed wins), empty when unset.
pip_setting() {
    pip config list 2>/dev/null | sed -n "s/^[^.]*\.$1='\(.*\)'\$/\1/p" | tail -n 1
}

mode="run"
case "${1:-}" in
    --test) mode="test"; shift ;;
    --setup) mode="setup"; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
esac

unset PYTHONDONTWRITEBYTECODE  # cache bytecode on first import (see install_packages)
setup
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
export TOKENIZERS_PARALLELISM=false
case "$mode" in
    setup) ;;
    test) exec "$VENV/bin/python" -m pytest -n auto --dist worksteal "$@" ;;  # one worker per core (pytest-xdist; idle workers take queued tests from busy ones); -n 0: one process
    run) exec "$VENV/bin/python" -m analysis "$@" ;;
esac
