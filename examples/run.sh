#!/usr/bin/env bash
# A guided tour of Pivot on the example in examples/ml.
#
#   bash examples/run.sh
#
# Needs only python3 (3.11+) and git. Creates .venv at the repository root if it
# is missing, copies the example into a fresh temporary git repository, and runs
# it there: nothing in this checkout is modified apart from .venv.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EXAMPLE="$REPO/examples/ml"
STEP=0

step() {
    STEP=$((STEP + 1))
    printf '\n\033[1m== %d. %s\033[0m\n' "$STEP" "$*"
}

# Print a command, then run it.
show() {
    printf '$ %s\n' "$*"
    "$@"
}

# replace FILE OLD NEW: replace one exact piece of text, or fail loudly.
replace() {
    python3 - "$@" <<'PY'
import sys
path, old, new = sys.argv[1:4]
text = open(path).read()
if old not in text:
    sys.exit(f"run.sh: {old!r} not found in {path}")
open(path, "w").write(text.replace(old, new, 1))
PY
}

step "Set up $REPO/.venv"
STAMP="$REPO/.venv/.pivot-installed"
if [ ! -x "$REPO/.venv/bin/python" ]; then
    (cd "$REPO" && python3 -m venv .venv)
fi
# Install Pivot, and again whenever pyproject.toml changes (new dependencies).
if [ ! -x "$REPO/.venv/bin/pivot" ] || [ ! -f "$STAMP" ] || [ "$REPO/pyproject.toml" -nt "$STAMP" ]; then
    echo "installing Pivot into .venv (pip output: $REPO/.venv/pip-install.log)"
    if ! (cd "$REPO" && .venv/bin/pip install -e .) > "$REPO/.venv/pip-install.log" 2>&1; then
        cat "$REPO/.venv/pip-install.log"
        echo "run.sh: pip install failed" >&2
        exit 1
    fi
    touch "$STAMP"
fi
export PATH="$REPO/.venv/bin:$PATH"
echo "using $(command -v pivot)"

step "Copy examples/ml into a new git repository"
PROJECT="$(mktemp -d "${TMPDIR:-/tmp}/pivot-example.XXXXXX")"
echo "project: $PROJECT"
mkdir -p "$PROJECT/data"
for f in .gitignore README.md params.yaml pipeline.py make_raw_csv.py data/raw.csv; do
    cp "$EXAMPLE/$f" "$PROJECT/$f"
done
cd "$PROJECT"
git init --quiet
git config user.name "Pivot Example"
git config user.email "example@pivot.invalid"
git config commit.gpgsign false
git add .
git commit --quiet -m "Example inputs and pipeline"
show git ls-files

step "Initialise Pivot"
show pivot init
git add .
git commit --quiet -m "pivot init"

step "The stages Pivot found in pipeline.py"
show pivot list
show pivot dag

step "First run: every stage runs"
show pivot run

step "Run again: nothing changed, so nothing runs"
show pivot run

step "The metric (committed to git, not cached)"
show cat metrics.json

step "Commit the results: lock files and the metric, not the data"
git add .
git commit --quiet -m "Run the pipeline"
show git show --stat --format=%s HEAD
echo "Ignored by git (Pivot's block in .gitignore), kept in .pivot/cache:"
show git status --short --ignored data/clean.csv model.json loss.csv

step "Change a parameter: train re-runs, evaluate follows (its model changed), clean is skipped"
cat > params.yaml <<'EOF'
# Overrides for the defaults in pipeline.py, one section per stage.
train:
  learning_rate: 0.02
  epochs: 300
EOF
show cat params.yaml
show pivot status --explain
show pivot run
show cat metrics.json

step "Change a constant only evaluate uses: only evaluate runs"
replace pipeline.py "TOLERANCE = 0.10" "TOLERANCE = 0.05"
show git diff -U0 pipeline.py
show pivot status --explain
show pivot run
show cat metrics.json

step "Add a comment to a helper: comments do not count, nothing is stale"
replace pipeline.py "    total = model[\"bias\"]" "    # Linear model on standardised features.
    total = model[\"bias\"]"
echo "(added a comment line inside predict(), which train and evaluate both call)"
show pivot status
show pivot run

step "Delete an output: Pivot restores it from the cache instead of re-running"
show rm model.json
show pivot run
show ls -l model.json

step "Compare with the last commit: metrics and params, read from git without checking out"
show pivot metrics diff
show pivot params diff

step "Done"
show git status --short
echo
echo "The project is in $PROJECT"
echo "Commit pipeline.py, params.yaml, .pivot/stages/*.lock and metrics.json together."
