#!/usr/bin/env bash
# Ensure a Python virtualenv with the pinned Celery exists.
#
#   VENV   venv directory (default: <repo>/.venv)
#   PYTHON interpreter used to create it (default: python3)
#
# Idempotent and fast (< 1 s) when the venv is already usable.
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

is_ready() {
    [ -x "$py" ] || return 1
    # Check the installed version from package metadata without importing
    # celery itself (importing celery is ~0.3 s; metadata lookup is cheap).
    "$py" - "$want" >/dev/null 2>&1 <<'EOF'
import sys
from importlib import metadata
sys.exit(0 if metadata.version("celery") == sys.argv[1] else 1)
EOF
}

if ! is_ready; then
    echo "ensure_venv: setting up $venv (celery==$want)" >&2
    if [ ! -x "$py" ]; then
        "${PYTHON:-python3}" -m venv "$venv" >&2
    fi
    "$py" -m pip install --disable-pip-version-check -q -r "$req" >&2
    if ! is_ready; then
        echo "ensure_venv: celery==$want still not importable from $py" >&2
        exit 1
    fi
    # Final check: celery really imports.
    "$py" -c 'import celery, kombu, amqp' >&2
fi

echo "$py"
