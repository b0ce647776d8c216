#!/usr/bin/env bash
# The policy's GPU checks (issue 7) as one prepared command for a lent GPU machine
# (../.library/device: 15 minutes of device time per session, all tries together).
#
#   here, once:  bash benchmarks/gpu_check.sh prep
#                  downloads the wheels the GPU image lacks (Python 3.12, x86-64) into .whl/, pinned to
#                  the versions in this machine's .venv
#   there:       run(command="bash benchmarks/gpu_check.sh run", carry=[".whl"], timeout_s=540)
#                  installs them into /tmp/site, then runs tests/policy (the GPU tests in
#                  tests/policy/test_policy_gpu.py are skipped everywhere else; both backbones) and
#                  benchmarks/policy_bench.py --device cuda for the U-Net and for the transformer
#                  (--backbone transformer); logs and the benchmarks' JSON go to $OUT.
# Time limits (sum 510 s, inside the 540 s of the run): tests 240 s, U-Net bench 150 s, transformer
# bench 120 s (its paper config is ~9 M parameters, the camera encoders dominate).
#
# The GPU image has torch (CUDA), numpy, pytest, hypothesis, yaml, tqdm, matplotlib, opencv; the
# project is used from the working tree (PYTHONPATH), not installed (its C extension is for the rig,
# not the policy).
set -uo pipefail
cd "$(dirname "$0")/.."

WHEELS=(diffusers pydantic pydantic_core annotated-types typing-inspection typing_extensions
        importlib_metadata lazy-importer zipp zarr numcodecs imagecodecs donfig google-crc32c)

case "${1:-}" in
prep)
    py=.venv/bin/python
    [ -x "$py" ] || { echo "no .venv here: run 'make test' once first" >&2; exit 2; }
    pins=()
    for name in "${WHEELS[@]}"; do
        version=$("$py" -m pip show "$name" 2>/dev/null | awk '/^Version:/ {print $2}')
        [ -n "$version" ] || { echo "$name is not installed in .venv" >&2; exit 2; }
        pins+=("$name==$version")
    done
    rm -rf .whl && mkdir -p .whl  # PYVER=3.11 makes a set for a dry run of "run" here
    "$py" -m pip download -q --no-deps --only-binary=:all: --python-version "${PYVER:-3.12}" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "${pins[@]}" || exit 1
    ls .whl && du -sh .whl
    ;;
run)
    out=${OUT:-runs/gpu_check}
    mkdir -p "$out"
    ls .whl/*.whl >/dev/null 2>&1 || { echo "no wheels in .whl/: run 'bash benchmarks/gpu_check.sh prep' here and carry .whl" >&2; exit 2; }
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
    python3 -c "import torch, diffusers, zarr; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'diffusers', diffusers.__version__, 'zarr', zarr.__version__)" | tee -a "$out/gpu.txt"
    timeout 240 python3 -m pytest -q -p no:cacheprovider -rs tests/policy 2>&1 | tee "$out/pytest.log" | grep -v "^train:"
    tests_rc=${PIPESTATUS[0]}
    timeout 150 python3 benchmarks/policy_bench.py --device cuda --runs 20 --tiny-runs 50 2>&1 | tee "$out/policy_bench.log"
    bench_rc=${PIPESTATUS[0]}
    timeout 120 python3 benchmarks/policy_bench.py --device cuda --backbone transformer --runs 20 --tiny-runs 50 2>&1 \
        | tee "$out/policy_bench_transformer.log"
    bench_t_rc=${PIPESTATUS[0]}
    echo "gpu_check: tests rc=$tests_rc, policy_bench rc=$bench_rc (unet), $bench_t_rc (transformer)"
    [ "$tests_rc" = 0 ] && [ "$bench_rc" = 0 ] && [ "$bench_t_rc" = 0 ]
    ;;
*)
    echo "usage: bash benchmarks/gpu_check.sh prep|run" >&2
    exit 2
    ;;
esac
