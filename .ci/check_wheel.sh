#!/usr/bin/env bash
# The package as users get it: build the sdist and, from it, the wheel (python -m build); install the
# wheel (not editable) into a fresh virtual environment; from an empty directory check that the
# recipes and py.typed are inside it, that every recipe resolves by name, and that `gkl demo --quick`
# runs. The fresh environment borrows the dependencies (torch, ...) of the project's environment
# through a .pth file instead of downloading them again; gkl itself must come from the wheel.
#   .ci/check_wheel.sh            (PY=path/to/python to use another project environment)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PY=${PY:-$REPO/.venv/bin/python}
unset PYTHONPATH  # a checkout's src/ on the path would hide what the wheel holds
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

fail() { echo "check_wheel: FAIL: $*" >&2; exit 1; }
step() { echo "check_wheel: $*"; }

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

step "building sdist and wheel"
"$PY" -m build --outdir "$WORK/dist" "$REPO" >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log"; fail "python -m build"; }
WHEEL=$(ls "$WORK"/dist/gkl-*.whl)

step "installing $(basename "$WHEEL") into a fresh virtual environment"
"$PY" -m venv "$WORK/venv"
VPY=$WORK/venv/bin/python
"$VPY" -m pip install -q --no-deps --no-index "$WHEEL"
# then (so pip never sees the project's own gkl) the project environment's site-packages as a plain
# path entry: its .pth files (an editable install of a checkout) are NOT processed, so it gives the
# dependencies but not gkl
"$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib']); print(sysconfig.get_paths()['platlib'])" \
  | sort -u >"$("$VPY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/_gkl_check_deps.pth"
GKL=$WORK/venv/bin/gkl

RUN=$WORK/empty
mkdir "$RUN"
cd "$RUN"
VENV_SITE=$("$VPY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
"$VPY" - "$VENV_SITE" "$REPO" <<'EOF' || fail "the installed gkl is not the wheel's, or lacks its data (see above)"
import sys
from pathlib import Path

import gkl
import gkl.recipes

site, repo = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
where = Path(gkl.__file__).resolve()
assert where.is_relative_to(site), f"gkl imported from {where}, not from the fresh environment {site}"
# the checkout's src/ (or the checkout itself) must not be on the path; its .venv (which may live in
# the checkout) is, on purpose, for the dependencies
on_path = [Path(p or ".").resolve() for p in sys.path]
assert not any(p == repo or p.is_relative_to(repo / "src") for p in on_path), "the checkout is on sys.path"
root = gkl.recipes.recipes_root()
assert root == where.parent / "recipes", f"recipes found at {root}, not inside the installed package"
assert (where.parent / "py.typed").is_file(), "py.typed is missing from the wheel"
EOF

step "comparing the shipped recipes with configs/"
(cd "$REPO/configs" && find . -name '*.yaml' | sort) >"$WORK/expected"
(cd "$VENV_SITE/gkl/recipes" && find . -name '*.yaml' | sort) >"$WORK/shipped"
diff "$WORK/expected" "$WORK/shipped" || fail "the wheel's gkl/recipes/ differs from configs/ (lines < are missing)"
for f in $(cd "$REPO/configs" && find . -name '*.yaml'); do
  cmp -s "$REPO/configs/$f" "$VENV_SITE/gkl/recipes/$f" || fail "gkl/recipes/$f differs from configs/$f"
done

step "gkl recipes list"
"$GKL" recipes list >"$WORK/list" || fail "gkl recipes list"
NAMES=$(cut -d' ' -f1 "$WORK/list")
EXPECTED=$(cd "$REPO/configs" && find . -name '*.yaml' ! -name '_*' | wc -l)
[ "$(echo "$NAMES" | wc -l)" -eq "$EXPECTED" ] || fail "gkl recipes list shows $(echo "$NAMES" | wc -l) recipes, configs/ has $EXPECTED"

step "gkl recipes show --resolved: every one of the $EXPECTED recipes"
# shellcheck disable=SC2086
"$GKL" recipes show --resolved $NAMES >"$WORK/resolved" || fail "a recipe does not resolve from the wheel (above)"
[ "$(grep -c '^# [^ ]* (/.*)$' "$WORK/resolved")" -eq "$EXPECTED" ] || fail "gkl recipes show printed fewer than $EXPECTED recipes"

step "the run commands by recipe name, one recipe per kind (their checkpoints/data do not exist here)"
declare -A COMMAND=([train]=train [distill]=distill [adv_train]=adv-train [ssl]=ssl-train
                    [segmentation]=seg-train [clip_train]=clip-train [clip_distill]=clip-distill)
for kind in "${!COMMAND[@]}"; do
  name=$(awk -v k="$kind" '$2 == k {print $1; exit}' "$WORK/list")
  [ -n "$name" ] || fail "no recipe of kind $kind"
  "$GKL" "${COMMAND[$kind]}" "$name" --print-config >/dev/null || fail "gkl ${COMMAND[$kind]} $name --print-config"
done
# a distillation recipe names a teacher checkpoint that a clean install does not have
"$GKL" distill cifar100/kd/res32x4_res8x4 --print-config >"$WORK/kd.yaml" \
  || fail "gkl distill cifar100/kd/res32x4_res8x4 --print-config"
grep -q "checkpoint: download_ckpts/" "$WORK/kd.yaml" || fail "the KD recipe's teacher checkpoint is not in its config"
[ ! -e download_ckpts ] || fail "download_ckpts exists in the empty directory"

step "gkl recipes copy, then run the copy; a second copy must refuse to overwrite"
"$GKL" recipes copy cifar100/kd/res32x4_res8x4 >/dev/null
"$GKL" distill res32x4_res8x4.yaml --print-config >/dev/null || fail "the copied recipe does not load"
if "$GKL" recipes copy cifar100/kd/res32x4_res8x4 2>/dev/null; then fail "gkl recipes copy overwrote a file"; fi

step "gkl sweep by study name (relative config: paths inside the package)"
"$GKL" sweep kl_family --dry-run >/dev/null || fail "gkl sweep kl_family --dry-run"

step "gkl demo --quick"
"$GKL" demo --quick --out runs/demo >"$WORK/demo.log" 2>&1 || { tail -30 "$WORK/demo.log"; fail "gkl demo --quick"; }
grep -q "gkl demo: MNIST-1D" "$WORK/demo.log" || { tail -30 "$WORK/demo.log"; fail "gkl demo printed no report"; }
step "OK: the wheel ships the package, py.typed and the $EXPECTED recipes, and runs from an empty directory"
