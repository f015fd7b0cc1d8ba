# Sourced by scripts/*.sh: make .venv with pop3tap installed (extras in $1, e.g. "[dev]").
# On Debian, python3 cannot create a venv without the python3-venv package: as root it is
# installed with apt; otherwise the script says what to install.
pop3tap_venv() {
    local extras="${1:-}"
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || { echo "error: pop3tap needs Python 3.11 or newer as python3" >&2; return 1; }
    if [ ! -x .venv/bin/python ]; then
        if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
            if [ "$(id -u)" = 0 ]; then
                echo "==> apt-get install python3-venv"
                DEBIAN_FRONTEND=noninteractive apt-get update -q
                DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv
            else
                echo "error: install python3-venv first (sudo apt-get install python3-venv)" >&2
                return 1
            fi
        fi
        echo "==> creating .venv"
        python3 -m venv .venv
    fi
    # The editable install follows the Python sources; only the packaging files, the C
    # scanner, the modules mypyc compiles next to their sources (the protocol core and the
    # recording path that pop3tap/_pure.py lists) and the extras need a new install. Skip
    # it when none of them changed.
    # An install with extras also serves a caller that asks for none (demo.sh after test.sh).
    local digest stamp recording installed=""
    recording="$(python3 -c 'import importlib.util as u
s = u.spec_from_file_location("pure", "pop3tap/_pure.py"); m = u.module_from_spec(s)
s.loader.exec_module(m); print(" ".join(n.replace(".", "/") + ".py" for n in m.RECORDING_PATH))')"
    # shellcheck disable=SC2086  # the list is space-separated paths without spaces
    digest="$(cat pyproject.toml setup.py pop3tap/_pure.py pop3tap/protocol/*.c \
        pop3tap/protocol/*.py $recording | sha256sum | cut -c1-64)"
    stamp="${digest}${extras}"
    [ -f .venv/.pop3tap-installed ] && installed="$(cat .venv/.pop3tap-installed)"
    if { [ "$installed" = "$stamp" ] || { [ -z "$extras" ] && [ "${installed:0:64}" = "$digest" ]; }; } \
            && .venv/bin/python -c 'import pop3tap' >/dev/null 2>&1; then
        echo "==> pop3tap${extras} is up to date in .venv"
        return 0
    fi
    echo "==> installing pop3tap${extras} into .venv"
    .venv/bin/python -m pip install -q --disable-pip-version-check -e ".${extras}"
    printf '%s' "$stamp" > .venv/.pop3tap-installed
}
