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
        else
            echo "[setup] creating $VENV"
            "$PYTHON" -m venv "$VENV"
        fi
    fi
    # The browser test (tests/test_browser.py) drives Debian's chromium through Playwright; no
    # browser is ever downloaded. Installed through apt when missing (as root), needed for --test.
    if [ "$mode" != "run" ] && [ ! -x /usr/bin/chromium ]; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            echo "[setup] installing Debian's chromium (apt-get) for the browser test"
            DEBIAN_FRONTEND=noninteractive apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
        fi
        if [ ! -x /usr/bin/chromium ]; then
            local hint="the browser test needs /usr/bin/chromium: run 'sudo apt-get install chromium' (Debian's package)"
            if [ "$mode" = "test" ]; then
                echo "error: $hint" >&2
                exit 2
            fi
            echo "[setup] warning: $hint" >&2
        fi
    fi
    local stamp="$VENV/.vlm-probes-installed"
    local want
    want="$(cat pyproject.toml run_all.sh requirements-lock.txt | "$VENV/bin/python" -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return
    fi
    # pip compiles every installed module one file at a time (~80 s for torch + transformers on 2
    # cores); --no-compile and one compileall over all cores afterwards does the same work in ~half
    # (a file that does not compile, such as a package's Python 2 test data, is only left uncached).
    if ! "$VENV/bin/python" -c 'import torch, torchvision' 2>/dev/null; then
        echo "[setup] installing $TORCH_PIN"
        "$VENV/bin/python" -m pip install --quiet --no-compile $TORCH_PIN
    fi
    echo "[setup] installing vlm-probes with extras [notebooks,test] at the tested versions (requirements-lock.txt)"
    "$VENV/bin/python" -m pip install --quiet --no-compile -c requirements-lock.txt -e ".[notebooks,test]"
    echo "[setup] compiling the installed modules"
    "$VENV/bin/python" -m compileall -q -j 0 "$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" >/dev/null || true
    "$VENV/bin/python" -m ipykernel install --sys-prefix --name "$KERNEL_NAME" \
        --display-name "Python (vlm-probes)" >/dev/null
    echo "$want" > "$stamp"
    echo "[setup] done: $("$VENV/bin/python" -c 'import torch, transformers; print("torch", torch.__version__, "| transformers", transformers.__version__)')"
}

mode="run"
case "${1:-}" in
    --test) mode="test"; shift ;;
    --setup) mode="setup"; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
esac

setup
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
export TOKENIZERS_PARALLELISM=false
case "$mode" in
    setup) ;;
    test) exec "$VENV/bin/python" -m pytest -n auto --dist worksteal "$@" ;;  # one worker per core (pytest-xdist; idle workers take queued tests from busy ones); -n 0: one process
    run) exec "$VENV/bin/python" -m analysis "$@" ;;
esac
