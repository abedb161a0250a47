#!/usr/bin/env bash
# Mutation testing of the pure core (issue 27): mutmut (pinned in requirements-dev.txt) changes one
# operator, constant or call at a time in losses, augment, evaluate, schedule and the frames' math,
# and each change must make that module's own tests fail. Not run by CI: about an hour at nice 19
# on 2 busy cores (a mutant runs only the tests that reach the function it changes).
#
#   bench/mutation.sh [module ...]     modules: losses augment evaluate schedule frames (default: all)
#
# Each module is mutated in its own copy of the tree under $MUTATION_DIR (default
# /tmp/ssl-mutation/<module>), so the working tree is never touched. The last lines give each
# module's score (killed / mutants; a timeout counts as killed: the change hung the tests);
# <copy>/survivors.txt lists the survivors, and `cd <copy> && mutmut show <name>` shows one.
# docs/reliability.md records the scores and why each survivor is equivalent or which test kills it.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${MUTATION_DIR:-/tmp/ssl-mutation}
CHILDREN=${MUTATION_CHILDREN:-2}

# Each module's own tests, pytest arguments separated by "|". frames: the unit tests of its math
# (the others train a model or read shipped runs). -k matches substrings: name the left-out tests
# closely ("short_run" alone also leaves out test_frames_are_due_..._within_short_runs).
declare -A TESTS=(
  [losses]="tests/test_losses.py"
  [augment]="tests/test_augment.py"
  [evaluate]="tests/test_evaluate.py"
  [schedule]="tests/test_schedule.py"
  [frames]="tests/test_frames.py|-k|not short_run_emits and not saved_beside and not damaged_frames and not projector and not replay"
)
# Which functions are mutated (mutmut's names; the whole module when absent): frames.py's math,
# not its JSON files, its timing or its t-SNE call.
declare -A ONLY=(
  [frames]="x_shown_classes x_sample_rows x_leave_one_out_knn x_to_box x_aligned_pca
            xǁRecorderǁ_confusion xǁRecorderǁ_distances xǁRecorderǁ_epoch xǁRecorderǁdue"
)

modules=("$@")
[ ${#modules[@]} -gt 0 ] || modules=(losses augment evaluate schedule frames)
summary=()
for m in "${modules[@]}"; do
  [ -n "${TESTS[$m]:-}" ] || { echo "unknown module: $m (choose: ${!TESTS[*]})" >&2; exit 2; }
  work="$OUT/$m"
  rm -rf "$work" && mkdir -p "$work"
  cp -r "$ROOT/ssl_core" "$ROOT/tests" "$ROOT/pytest.ini" "$ROOT/checkpoints" "$ROOT/assets" "$work/"
  {
    echo "[mutmut]"
    echo "source_paths = ssl_core"
    echo "only_mutate = ssl_core/$m.py"
    echo "pytest_add_cli_args_test_selection ="
    tr '|' '\n' <<< "${TESTS[$m]}" | sed 's/^/    /'
    printf 'also_copy =\n    pytest.ini\n    checkpoints\n    assets\n'  # some tests read the shipped models
    echo "process_isolation = forkserver"  # torch is not fork-safe once its threads run
    echo "timeout_constant = 60"  # a busy shared machine: the default 1 s marks slow tests as hung
  } > "$work/setup.cfg"
  patterns=()
  for f in ${ONLY[$m]:-}; do patterns+=("ssl_core.$m.${f}__mutmut_*"); done
  (cd "$work" && nice -n 19 mutmut run --max-children "$CHILDREN" "${patterns[@]}" > run.log 2>&1 || true)
  (cd "$work" && mutmut results --all true > results.txt 2>&1 || true)
  line=$(cd "$work" && python3 - "${patterns[@]}" <<'PY'
import fnmatch, re, sys
rows = re.findall(r"^\s*(\S+__mutmut_\d+): (.+)$", open("results.txt").read(), re.M)
rows = [(n, s) for n, s in rows if not sys.argv[1:] or any(fnmatch.fnmatch(n, p) for p in sys.argv[1:])]
caught = [n for n, s in rows if s in ("killed", "timeout", "segfault")]
open("survivors.txt", "w").write("".join(f"{n}: {s}\n" for n, s in rows if n not in set(caught)))
print(f"{len(caught)} of {len(rows)} mutants killed ({len(caught) / max(1, len(rows)):.1%})")
PY
)
  summary+=("$m: $line; survivors in $work/survivors.txt")
done
printf '%s\n' "${summary[@]}"
