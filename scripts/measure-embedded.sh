#!/usr/bin/env bash
# The README's embedded measurements in one command: the SafeChain recipe, the TARS recipe (mix, warm-up, GRPO,
# held-out eval of base / warm-up / GRPO with paired CIs) and the prefilling attack with and without SafeThink,
# all on smollm2-135m-think, judged by smol-guard and rs-match.
#
#   scripts/measure-embedded.sh [all|safechain|tars|attacks|gcg|tars-eval-base|tars-eval-warmup]...
#   (default: all = safechain tars attacks; tars-eval-base / -warmup run the held-out evals of the untrained and
#   warmed-up models early, next to the training, to save wall time)
#
# Every stage writes under $OUT (default runs/measure) and is resumable: a finished stage is skipped (its marker in
# $OUT/.done), an interrupted one is re-run with the same command, which resumes where it was cut (eval, recipe,
# train and attack all resume into their own --out). Wall times per stage go to $OUT/times.tsv.
# The parts are independent and may run at the same time (e.g. three shells, one part each).
# Environment: SAFEREASON_DATA (benchmark files; default /work/shared/data), SR (the CLI; default
# .venv/bin/safereason), OMP_NUM_THREADS (default 1: on shared, busy cores torch's threads stall each other),
# NICE (default 5), and the sizes below.
set -euo pipefail
cd "$(dirname "$0")/.."

SR=${SR:-.venv/bin/safereason}
OUT=${OUT:-runs/measure}
NICE=${NICE:-5}
export SAFEREASON_DATA=${SAFEREASON_DATA:-/work/shared/data}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

MODEL=smollm2-135m-think
JUDGES=smol-guard,rs-match
THINK=$'<think>\n'
# sizes (kept small for 2 busy CPU cores; raise them for a tighter CI)
SC_N_HELDOUT=${SC_N_HELDOUT:-10}           # SafeChain: held-out StrongREJECT-small prompts (drawn, seed 0)
SC_N_TRAIN=${SC_N_TRAIN:-24}               # SafeChain: AdvBench instructions given to the teacher
TARS_HELDOUT=${TARS_HELDOUT:-advbench}      # held-out harmful prompts: another source than the mix's harmful rows
TARS_N_HELDOUT=${TARS_N_HELDOUT:-10}
TARS_GRPO_STEPS=${TARS_GRPO_STEPS:-4}
ATTACK_N=${ATTACK_N:-10}                    # HarmBench behaviours (first N)
EVAL_K=${EVAL_K:-2}
EVAL_TOKENS=${EVAL_TOKENS:-96}
GCG_STEPS=${GCG_STEPS:-8}

renice -n "$NICE" -p $$ >/dev/null   # this shell and every stage it starts
mkdir -p "$OUT/.done"
[ -f "$OUT/times.tsv" ] || printf 'stage\tseconds\tfinished\tload\n' > "$OUT/times.tsv"

stage() {  # stage NAME CMD...: run CMD unless NAME is done; record its wall time
    local name=$1; shift
    if [ -f "$OUT/.done/$name" ]; then echo "== $name: done ($(cat "$OUT/.done/$name") s), skipped"; return; fi
    echo "== $name: $*"
    local t0; t0=$(date +%s)
    "$@"
    local dt=$(( $(date +%s) - t0 ))
    echo "$dt" > "$OUT/.done/$name"
    printf '%s\t%s\t%s\t%s\n' "$name" "$dt" "$(date -u +%FT%TZ)" "$(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT/times.tsv"
    echo "== $name: $dt s"
}

eval_run() {  # eval_run OUT_DIR MODEL BENCHMARK [extra eval flags...]
    local out=$1 model=$2 bench=$3; shift 3
    "$SR" eval --model "$model" --benchmark "$bench" --k "$EVAL_K" --temperature 0.7 --top-p 0.95 \
        --max-new-tokens "$EVAL_TOKENS" --seed 0 --reasoning-format r1 --think-prefill "$THINK" \
        --judge "$JUDGES" --parts thinking,answer,full --no-progress --out "$out" "$@"
}

safechain() {
    # the example's settings (the defaults) at a smaller size; GSM8K is skipped (a 135M model scores ~0 on it)
    stage safechain "$SR" recipe safechain --config examples/safechain-embedded.yaml --out "$OUT/safechain" \
        --n-heldout "$SC_N_HELDOUT" --k "$EVAL_K" --n-train "$SC_N_TRAIN" --teacher-k "$EVAL_K" \
        --max-new-tokens "$EVAL_TOKENS" --utility none
    cat "$OUT/safechain/table.md"
}

tars_heldout() {  # held-out: the first TARS_N_HELDOUT prompts of another harmful set, none of them in the mix
    local T=$OUT/tars
    stage tars-mix "$SR" data mix --harmful strongreject-small --benign jbb-benign --ambiguous xstest --lambda 0.5 \
        --n 16 --seed 0 --out "$T/mix.jsonl" --force
    stage tars-heldout .venv/bin/python - "$TARS_HELDOUT" "$TARS_N_HELDOUT" "$T/mix.jsonl" "$T/heldout.jsonl" <<'EOF'
import json, re, sys
from safereason.data import load_benchmark
name, n, mix, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
fold = lambda s: re.sub(r"[\W_]+", " ", s).strip().lower()
seen = {fold(json.loads(l)["prompt"]) for l in open(mix, encoding="utf-8")}
rows = [p for p in load_benchmark(name).prompts if fold(p.prompt) not in seen][:n]
with open(out, "w", encoding="utf-8") as f:
    for p in rows:
        f.write(json.dumps({"id": p.id, "prompt": p.prompt, "category": p.category, "label": "harmful"}) + "\n")
print(f"{len(rows)} held-out prompts from {name}, none in the mix")
EOF
}

tars_eval() {  # tars_eval base|warmup|grpo: the held-out eval of that model (the parts may run side by side)
    local T=$OUT/tars m
    case $1 in base) m=$MODEL ;; warmup) m=$T/warmup/model ;; grpo) m=$T/grpo/model ;; esac
    stage "tars-eval-$1" eval_run "$T/eval/$1" "$m" "$T/heldout.jsonl"
}

tars() {
    local T=$OUT/tars
    stage tars-mix "$SR" data mix --harmful strongreject-small --benign jbb-benign --ambiguous xstest --lambda 0.5 \
        --n 16 --seed 0 --out "$T/mix.jsonl" --force
    stage tars-warmup "$SR" train sft --config examples/tars-embedded-warmup.yaml --out "$T/warmup"
    stage tars-grpo "$SR" train grpo --config examples/tars-embedded.yaml --model "$T/warmup/model" \
        --prompts "$T/mix.jsonl" --out "$T/grpo" --max-steps "$TARS_GRPO_STEPS"
    tars_heldout
    tars_eval base
    tars_eval warmup
    tars_eval grpo
    stage tars-compare "$SR" compare "$T/eval/base" "$T/eval/warmup" "$T/eval/grpo" \
        --label base --label warmup --label grpo --baseline base --out "$T/compare.md"
    stage tars-compare-grpo "$SR" compare "$T/eval/warmup" "$T/eval/grpo" \
        --label warmup --label grpo --baseline warmup --out "$T/compare-grpo-vs-warmup.md"
    cat "$T/compare.md" "$T/compare-grpo-vs-warmup.md"
}

attacks() {
    local A=$OUT/attacks
    stage attack-prefill "$SR" attack prefill --benchmark harmbench --limit "$ATTACK_N" --where thought \
        --out "$A/prefill"
    stage attack-eval-undefended eval_run "$A/eval/undefended" "$MODEL" "$A/prefill/adversarial.jsonl"
    stage attack-eval-safethink eval_run "$A/eval/safethink" "$MODEL" "$A/prefill/adversarial.jsonl" \
        --defense safethink --defense-opt scorer=smol-guard
    stage attack-compare "$SR" compare "$A/eval/undefended" "$A/eval/safethink" \
        --label undefended --label safethink --baseline undefended --out "$A/compare.md"
    stage attack-report-smol-guard "$SR" attack report "$A/eval/undefended" "$A/eval/safethink" \
        --judge smol-guard --part full --out "$A/report-smol-guard"
    stage attack-report-rs-match "$SR" attack report "$A/eval/undefended" "$A/eval/safethink" \
        --judge rs-match --part full --out "$A/report-rs-match"
    cat "$A/compare.md" "$A/report-smol-guard/attack_report.md" "$A/report-rs-match/attack_report.md"
}

gcg() {  # a tiny GCG budget only: the paper's 250 steps of width 512 are a GPU job
    local A=$OUT/attacks
    stage attack-gcg "$SR" attack gcg --model "$MODEL" --benchmark harmbench --limit 2 --steps "$GCG_STEPS" \
        --search-width 64 --think-prefill "$THINK" --template "{prompt} {optim_str}" --out "$A/gcg"
    stage attack-gcg-eval-undefended eval_run "$A/eval/gcg-undefended" "$MODEL" "$A/gcg/adversarial.jsonl"
    stage attack-gcg-eval-safethink eval_run "$A/eval/gcg-safethink" "$MODEL" "$A/gcg/adversarial.jsonl" \
        --defense safethink --defense-opt scorer=smol-guard
}

parts=("$@"); [ ${#parts[@]} -gt 0 ] || parts=(all)
for p in "${parts[@]}"; do
    case $p in
        all) safechain; tars; attacks ;;
        safechain|tars|attacks|gcg|tars_heldout) "$p" ;;
        tars-eval-base|tars-eval-warmup|tars-eval-grpo) tars_heldout; tars_eval "${p#tars-eval-}" ;;
        *) echo "unknown part $p: use all, safechain, tars, attacks or gcg" >&2; exit 2 ;;
    esac
done
