# Sourced by the scripts in this folder: find the interpreters and keep one venv per use.
# The venvs live in .venv/ (git-ignored) and are rebuilt when pyproject.toml changes.

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYENV_ROOT=${PYENV_ROOT:-/root/.pyenv}

# find_python 3.11 -> path of the newest installed CPython 3.11.x
find_python() {
    local want=$1 candidate
    candidate=$(ls -d "$PYENV_ROOT"/versions/"$want".* 2>/dev/null | sort -V | tail -n 1)
    if [ -n "$candidate" ] && [ -x "$candidate/bin/python" ]; then
        echo "$candidate/bin/python"
        return 0
    fi
    if command -v "python$want" >/dev/null 2>&1; then
        command -v "python$want"
        return 0
    fi
    echo "error: no Python $want found (looked in $PYENV_ROOT/versions and on PATH)" >&2
    return 1
}

# ensure_venv NAME PYTHON EXTRAS -> prints the venv's python; installs the project editable
ensure_venv() {
    local name=$1 python=$2 extras=$3
    local dir="$repo/.venv/$name"
    local stamp
    stamp="$("$python" --version 2>&1) $extras $(sha256sum "$repo/pyproject.toml" | cut -c1-16)"
    if [ ! -x "$dir/bin/python" ] || [ "$(cat "$dir/.stamp" 2>/dev/null)" != "$stamp" ]; then
        rm -rf "$dir"
        echo "setting up .venv/$name ($("$python" --version 2>&1), extras: ${extras:-none})" >&2
        local log="$repo/.venv/$name.install.log"
        mkdir -p "$repo/.venv"
        if ! { "$python" -m venv "$dir" &&
               "$dir/bin/python" -m pip install --disable-pip-version-check --upgrade pip &&
               "$dir/bin/python" -m pip install --disable-pip-version-check \
                   -e "$repo${extras:+[$extras]}"; } >"$log" 2>&1; then
            cat "$log" >&2
            echo "error: could not set up .venv/$name (log above)" >&2
            return 1
        fi
        echo "$stamp" > "$dir/.stamp"
    fi
    echo "$dir/bin/python"
}
