#!/usr/bin/env bash
# Builds the C core with AddressSanitizer + UBSan in a scratch copy of the tree and runs the
# test suite against that build. Usage: bash tools/asan_tests.sh [pytest args]
#   or: bash tools/asan_tests.sh --cmd COMMAND [ARGS...]   (any command, e.g. the fuzz target:
#       bash tools/asan_tests.sh --cmd python tools/fuzz_binding.py -max_total_time=1800)
# (Python itself is not instrumented, so libasan is preloaded; leak detection is off because
# the interpreter keeps allocations alive until exit.)
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git -C "$src" ls-files -z --cached --others --exclude-standard | (cd "$src" && xargs -0 cp --parents -t "$work")
cd "$work"
SYNCSDE_SANITIZE=1 SYNCSDE_WERROR=1 python setup.py -q build_ext --inplace 2>&1 | grep -v -i "setuptools\|warnings.warn\|^$" || true
nm -D syncsde/_C*.so | grep __asan_report > /dev/null || { echo "the build is not instrumented"; exit 1; }
libasan=$(gcc -print-file-name=libasan.so)
libubsan=$(gcc -print-file-name=libubsan.so)
export LD_PRELOAD="$libasan:$libubsan"
# allocator_may_return_null: an impossible allocation returns NULL (MemoryError), as in a
# plain build, instead of aborting
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1:allocator_may_return_null=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export SYNCSDE_ASAN_RUN=1
if [ "${1:-}" = "--cmd" ]; then
    shift
    PYTHONPATH="$work" "$@"
else
    PYTHONPATH="$work" python -m pytest -q -p no:cacheprovider "${@:-tests}"
fi
