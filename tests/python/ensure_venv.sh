#!/usr/bin/env bash
# Ensure a Python virtualenv with the pinned Celery exists.
#
#   VENV   venv directory (default: <repo>/.venv)
#   PYTHON interpreter used to create it (default: python3)
#
# Idempotent and fast (~0.1 s) when the venv is already usable.
# The last line printed on stdout is the venv's python path; everything else
# (pip output) goes to stderr.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${VENV:-$repo/.venv}"
req="$here/requirements.txt"
py="$venv/bin/python"

# The pinned celery version, read from requirements.txt.
want="$(sed -n 's/^[[:space:]]*celery[[:space:]]*==[[:space:]]*\([^[:space:];#]*\).*/\1/p' "$req" | head -n1)"
want="${want:-5.7.0}"

# The requirements as last installed: a changed requirements.txt reinstalls.
stamp="$venv/.requirements.sha256"
wanted_stamp="$(sha256sum "$req" | cut -d' ' -f1)"

is_ready() {
    [ -x "$py" ] || return 1
    [ "$(cat "$stamp" 2>/dev/null)" = "$wanted_stamp" ] || return 1
    # celery imports lazily, so this takes ~50 ms.
    "$py" -c 'import sys, celery; sys.exit(celery.__version__ != sys.argv[1])' \
        "$want" >/dev/null 2>&1
}

if ! is_ready; then
    echo "ensure_venv: setting up $venv (celery==$want)" >&2
    if [ ! -x "$py" ]; then
        "${PYTHON:-python3}" -m venv "$venv" >&2
    fi
    "$py" -m pip install --disable-pip-version-check -q -r "$req" >&2
    echo "$wanted_stamp" >"$stamp"
    if ! is_ready; then
        echo "ensure_venv: celery==$want still not importable from $py" >&2
        exit 1
    fi
fi

echo "$py"
