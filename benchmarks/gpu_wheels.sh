#!/usr/bin/env bash
# The wheels that `benchlib bench` needs on the GPU machine and its Python 3.12 lacks,
# downloaded here into .whl/ (git-ignored) for benchmarks/gpu_acceptance.sh to install
# there with `pip install --no-index --target`. That machine reaches no registry.
#
#     bash benchmarks/gpu_wheels.sh            # from the repository root
#
# The GPU image already holds what else the bench path imports (torch, torchvision,
# transformers, numpy, pandas, pyarrow, scipy, pyyaml, tqdm); it lacks pydantic and
# its needs. typing-extensions travels too: pydantic needs a newer one than the image
# may have. Versions are those of this checkout's .venv, so both machines validate
# params with the same code; pydantic-core is a compiled wheel, fetched for CPython
# 3.12 on manylinux x86_64.
set -euo pipefail

cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DEST=${DEST:-.whl}
PACKAGES=(pydantic pydantic-core annotated-types typing-inspection typing-extensions)

if [ ! -x "$PY" ]; then
    echo "gpu_wheels: no $PY; create the venv first (make test), or set PY=python-with-benchlib's-deps" >&2
    exit 2
fi

rm -rf "$DEST"
mkdir -p "$DEST"
for name in "${PACKAGES[@]}"; do
    version=$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")
    "$PY" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
        --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform any -d "$DEST" "$name==$version"
done

count=$(find "$DEST" -type f -name '*.whl' | wc -l)
if [ "$count" -ne "${#PACKAGES[@]}" ]; then
    echo "gpu_wheels: expected ${#PACKAGES[@]} wheels in $DEST, found $count" >&2
    exit 1
fi
ls -1s --block-size=K "$DEST"
echo "gpu_wheels: $count wheels, $(du -sh "$DEST" | cut -f1) in $DEST/"
