# Sourced by the GPU scripts (gpu_check.sh, gpu_science.sh): installs the packages the GPU image lacks from the
# carried wheels ($WHEELS, made by `make gpu-wheels`), with $PYTHON; nothing comes from the network.
#
#   install_missing_packages NAME   # NAME: the calling script, for its messages; returns non-zero on failure
install_missing_packages() {
    MISSING=()
    for pair in kornia:kornia kornia_rs:kornia-rs lightly:lightly pydantic:pydantic pydantic_core:pydantic-core \
                annotated_types:annotated-types typing_inspection:typing-inspection; do
        "$PYTHON" -c "import ${pair%%:*}" 2>/dev/null || MISSING+=("${pair#*:}")
    done
    if [ ${#MISSING[@]} -eq 0 ]; then
        echo "all present: nothing to install"
    elif [ -z "$WHEELS" ] || [ ! -d "$WHEELS" ]; then
        echo "$1: missing ${MISSING[*]}; carry their wheels (make gpu-wheels) and pass GPU_WHEELS=DIR" \
             "or --wheels DIR" >&2
        return 1
    else
        echo "installing from $WHEELS (no index, no network): ${MISSING[*]}"
        "$PYTHON" -m pip install -q --no-index --no-deps --no-cache-dir --find-links "$WHEELS" "${MISSING[@]}" || return 1
        # --no-deps: report what the installed ones require and this image lacks, and install it where a wheel was carried.
        UPGRADE=$("$PYTHON" - "$WHEELS" "${MISSING[@]}" <<'PY'
import importlib.metadata as md
import pathlib
import sys

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

carried = {canonicalize_name(p.name.split("-")[0]) for p in pathlib.Path(sys.argv[1]).glob("*.whl")}
wanted = set()
for name in sys.argv[2:]:
    for text in md.requires(name) or []:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        try:
            have = md.version(req.name)
        except md.PackageNotFoundError:
            have = None
        if have is not None and req.specifier.contains(have, prereleases=True):
            continue
        key = canonicalize_name(req.name)
        fix = "installing the carried wheel" if key in carried else "no wheel carried; not imported by this check"
        print(f"  {name} requires {req}, the image has {have or 'none'}: {fix}", file=sys.stderr)
        if key in carried:
            wanted.add(key)
print(" ".join(sorted(wanted)))
PY
        ) || return 1
        if [ -n "$UPGRADE" ]; then
            echo "installing from $WHEELS (no index, no network): $UPGRADE"
            # shellcheck disable=SC2086
            "$PYTHON" -m pip install -q --no-index --no-deps --no-cache-dir --upgrade --find-links "$WHEELS" \
                $UPGRADE || return 1
        fi
    fi
}
