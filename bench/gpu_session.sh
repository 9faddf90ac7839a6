#!/usr/bin/env bash
# One device call of the GPU measurements, by phase (each fits one 10-minute call):
#   bash bench/gpu_session.sh tests     GPU tests, SmolLM2 engine from fresh processes, grammar bench
#   bash bench/gpu_session.sh engine8b  8B engine from fresh processes, transformers peers
#   bash bench/gpu_session.sh serving   the mesh against its engine, SmolLM2 and 8B shapes
#   bash bench/gpu_session.sh serving8b the mesh against its engine, 8B shapes, 1 and 256
#                                       staggered streams
#   bash bench/gpu_session.sh profile   the decode graph's kernels, batch 1 and 64
#   bash bench/gpu_session.sh latency   grammar host cost, TTFT hop by hop, 1 and 32 streams
#   bash bench/gpu_session.sh graphs    GPU tests, then TTFT hop by hop and 1 and 32 streams
#   bash bench/gpu_session.sh kernels   decode-attention tiles, the 8B workload by step kind and
#                                       kernel family, constrained vs free on both shapes
#   bash bench/gpu_session.sh engine    both presets' engine from a fresh process (overlapped
#                                       loop), constrained vs free on both and the host time of
#                                       their steps by phase, batch-1 decode tiles,
#                                       the projections' GEMMs under cuBLAS and cuBLASLt
#   bash bench/gpu_session.sh gaps      where the GPU idles in the 8B workload (between steps or
#                                       inside them)
#   bash bench/gpu_session.sh structured constrained vs free on both shapes, and the host time
#                                       of their steps by phase
#   bash bench/gpu_session.sh mesh256   SmolLM2 shapes, 256 staggered streams: the engine alone
#                                       and the mesh alternated (ROUNDS=2), each its own process; with
#                                       BASE=<a tree of another commit> its mesh between them
#   bash bench/gpu_session.sh spy       the mesh at 256 streams under py-spy (bench/mesh_spy.py)
#   bash bench/gpu_session.sh interval  the engine alone, and the mesh at 256 streams with stream
#                                       intervals 1 and 4, alternated
#   bash bench/gpu_session.sh pinned    the engine alone and the mesh at 256 streams, each with its
#                                       engine on a core of its own (--engine-cpus, the pair
#                                       bench/cpu_siblings.py finds) and without, alternated
#                                       (ROUNDS=2 rounds)
#   bash bench/gpu_session.sh pinned-small  1 and 32 streams, the engine alone and the mesh, on a
#                                       core of their own and not
#   bash bench/gpu_session.sh host      the engine's host work per step at 256 SmolLM2 decodes, by
#                                       phase and helper (bench/host_step.py --detail), three
#                                       fresh processes (BASE=<tree>: each followed by one of
#                                       that tree), then a closed loop of arrivals
#   bash bench/gpu_session.sh tracing   the mesh at 256 streams with every request traced and
#                                       without, alternated three times; BASE=<tree> adds its
#                                       traced mesh
#   bash bench/gpu_session.sh ttft      the engine alone's first token hot and after idle gaps
#                                       (bench/engine_ttft.py, two rounds), then 1 stream
#                                       through the mesh (1 gateway, 1 client); BASE=<tree>:
#                                       each run followed by one of that tree
#   bash bench/gpu_session.sh one       issue 12's 1-stream target: ROUNDS (4) fresh meshes, 1
#                                       gateway, 1 client, each with its own engine-alone run
#                                       first; BASE=<tree>: each followed by one of that tree
#   bash bench/gpu_session.sh colocate  1 and 32 streams (4 gateways, 8 clients), each gateway
#                                       process hosting its router and the router a process of
#                                       its own, alternated (ROUNDS=2 rounds)
#   bash bench/gpu_session.sh colocate256  the engine alone and the mesh at 256 streams with the
#                                       router hosted and as a process, alternated (ROUNDS=2)
#   bash bench/gpu_session.sh fused     the batch-1 and batch-8 decode step's kernels
#                                       (bench/decode_profile.py) of this tree and of each tree
#                                       in TREES (space-separated paths: kernel variants, the
#                                       base), each its own process, alternated (ROUNDS=1; four
#                                       trees beside this one fit one call), then the kernel and
#                                       engine GPU tests
#   bash bench/gpu_session.sh poll      1 stream through fresh meshes with kvmesh up's polling
#                                       (kvmesh/busy_poll.py) as it chooses and with
#                                       KVMESH_BUSY_POLL=0, alternated (ROUNDS, 3), then a NATS
#                                       round trip with both ends polling and not
#   bash bench/gpu_session.sh targets   the open H200 targets in one call: `one` (ROUNDS, 3),
#                                       `mesh256` (one round), the batch-1 decode profile
#   bash bench/gpu_session.sh splits    decode attention with one split against the full-span
#                                       graph's splits by batch and context, and one split
#                                       under every candidate tile (bench/decode_splits.py)
#   bash bench/gpu_session.sh probe     SmolLM2's one-row layer chain in one persistent launch
#                                       (grid barriers) against one launch a phase, and each
#                                       phase's own cost (bench/persistent_probe.py)
#   bash bench/gpu_session.sh hops      one stream's first token hop by hop from marks in every
#                                       process (bench/hop_marks.py): as `kvmesh up` runs, without
#                                       the result cache, with the router hosted (ROUNDS=1)
# Needs the wheels in .whl (`python bench/device_wheels.py` fetches them) and the model folders
# in .bench_models (`python bench/shaped_model.py smollm2 .bench_models/SmolLM2-135M-Instruct`,
# `... llama-3.1-8b .bench_models/llama-3.1-8b-shaped`); carry both. Writes logs under $OUT and
# prints bench/gpu_summary.py's table of them last.
set -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench-out}; mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH
fi
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:-$PWD}
TOK=.bench_models/SmolLM2-135M-Instruct/tokenizer.json
git log -1 --format='commit %h %s' 2>/dev/null
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,power.draw --format=csv,noheader

gpu_tests() {  # the GPU test suite; the last $1 lines of its output
  KVMESH_TOKENIZER_JSON=$TOK timeout 230 python3 -m pytest -q -p no:cacheprovider --timeout 150 \
    tests/gpu 2>&1 | tee "$OUT/gpu_tests.log" | tail -"$1"
}

ttft_hops() {  # TTFT hop by hop, then 1 and 32 SmolLM2 streams through the mesh
  timeout 100 python3 bench/ttft_waterfall.py --model .bench_models/SmolLM2-135M-Instruct \
    --load-format dummy --requests 40 --prompt-words 150 --out "$OUT" 2>&1 \
    | tee "$OUT/waterfall.log" | tail -12
  timeout 150 python3 bench/gpu_serving.py --model .bench_models/SmolLM2-135M-Instruct \
    --load-format dummy --levels 1,32 --duration 10 --warmup 3 --engine-duration 8 \
    --clients 8 --gateways 4 --out "$OUT" 2>&1 | tee "$OUT/serving_small.log" | tail -5
}

structured_runs() {  # constrained vs free: SmolLM2 shapes (lanes 1 and 16), 8B shapes
  timeout 120 python3 -m bench.structured --device cuda --seqs 64 --tokens 256 \
    --model dummy:smollm2-135m --tokenizer $TOK --grammar-lanes 1,16 2>&1 \
    | tee "$OUT/structured.log" | tail -1
  timeout 150 python3 -m bench.structured --device cuda --seqs 64 --tokens 256 \
    --model .bench_models/llama-3.1-8b-shaped --load-format dummy 2>&1 \
    | tee "$OUT/structured_8b.log" | tail -1
}

step_phases() {  # host ms per engine phase, constrained and free, on both shapes
  for m in SmolLM2-135M-Instruct llama-3.1-8b-shaped; do
    timeout 90 python3 bench/step_phases.py --model .bench_models/$m --load-format dummy 2>&1 \
      | tee "$OUT/step_phases_$m.log" | tail -2
  done
}

SMOL=$PWD/.bench_models/SmolLM2-135M-Instruct
cpu_speed() {  # each CPU's Python speed now, labelled $1 (the vCPUs change speed: cpu_speed.py)
  python3 bench/cpu_speed.py --repeat 3 | sed "s/^/$1 /" | tee -a "$OUT/cpu_speed.txt" | cut -c1-60
}
alone256() {  # the engine alone, 256 staggered streams, from a fresh process; $1 labels it;
  # $2...: more flags
  local label=$1
  shift
  cpu_speed "alone $label"
  timeout 150 python3 bench/gpu_serving.py --model "$SMOL" --load-format dummy --engine-only \
    --levels 256 --stagger --warmup 3 --engine-duration 8 "$@" 2>"$OUT/alone-$label.err" \
    | grep '^ENGINE' | sed "s/^ENGINE/alone $label/" | tee -a "$OUT/alone.txt" | cut -c1-300
}
mesh256() {  # the mesh (4 gateways, 8 clients), 256 staggered streams; $1 labels it; $2: run
  # another tree (its own code and bench/gpu_serving.py) instead of this one; $3...: more flags
  local label=$1 tree=${2:-$PWD}
  shift $(( $# < 2 ? $# : 2 ))
  cpu_speed "mesh $label"
  (cd "$tree" && export PYTHONPATH=$([ -d /tmp/site ] && echo /tmp/site:)$tree && \
    timeout 280 python3 bench/gpu_serving.py --model "$SMOL" --load-format \
    dummy --levels 256 --stagger --skip-engine --duration 10 --warmup 3 --clients 8 \
    --gateways 4 --out "$OUT/mesh-$label" "$@" 2>&1 | tee "$OUT/mesh-$label.log" | grep '"streams"' \
    | cut -c1-900)
}

in_tree() {  # run "$@" in tree $1 (its own code on PYTHONPATH)
  local tree=$1; shift
  (cd "$tree" && export PYTHONPATH=$([ -d /tmp/site ] && echo /tmp/site:)$tree && "$@")
}

one_stream() {  # 1 stream through a fresh mesh (1 gateway, 1 client) after its own
  # engine-alone run, in tree $1, labelled $2
  cpu_speed "$2"
  in_tree "$1" timeout 120 python3 bench/gpu_serving.py --model "$SMOL" --load-format dummy \
    --levels 1 --duration 8 --warmup 2 --engine-duration 3 --clients 1 --gateways 1 \
    --out "$OUT/$2" > "$OUT/$2.log" 2>&1
}

one_rounds() {  # $1 rounds of one_stream; with BASE, each followed by one of that tree
  for r in $(seq "$1"); do
    for tree in "$PWD" ${BASE:+"$BASE"}; do
      one_stream "$tree" "small-one-$([ "$tree" = "$PWD" ] && echo this || echo base)-$r"
    done
  done
}

mesh256_rounds() {  # $1 rounds of the engine alone, then the mesh, at 256 staggered streams;
  # with BASE, each round also runs that tree's mesh
  for r in $(seq "$1"); do
    alone256 "$r"
    mesh256 "tree-$r"
    if [ -n "$BASE" ]; then mesh256 "base-$r" "$BASE"; fi
  done
}

core_pair() {  # A and B: two CPUs that share a core (bench/cpu_siblings.py), found once per $OUT
  [ -s "$OUT/pair.txt" ] || python3 bench/cpu_siblings.py > "$OUT/pair.txt"
  read -r _ A B RATIO < "$OUT/pair.txt"
  echo "CPUs $A and $B share a core (a busy $A slows $B ${RATIO}x)"
}

case "$1" in
mesh256)
  mesh256_rounds "${ROUNDS:-2}"
  ;;
interval)
  for r in 1 2; do
    alone256 "$r"
    mesh256 "si1-$r"
    mesh256 "si4-$r" "" --stream-interval 4
  done
  ;;
pinned)
  core_pair
  for r in $(seq "${ROUNDS:-2}"); do
    alone256 "pinned-$r" --engine-cpus "$A,$B"
    mesh256 "pinned-$r" "" --engine-cpus "$A,$B"
    alone256 "free-$r"
    mesh256 "free-$r"
  done
  ;;
pinned-small)  # PLACES=free: unpinned only (no probe)
  [[ " ${PLACES:-pinned} " == *" pinned "* ]] && core_pair
  for placed in ${PLACES:-pinned free}; do
    cpu_speed "small $placed"
    timeout 200 python3 bench/gpu_serving.py --model "$SMOL" --load-format dummy --levels 1,32 \
      --duration 10 --warmup 3 --engine-duration 8 --clients 8 --gateways 4 \
      $([ $placed = pinned ] && echo --engine-cpus "$A,$B") --out "$OUT/small-$placed" 2>&1 \
      | tee "$OUT/small-$placed.log" | grep -E '^engine|"streams"' | cut -c1-400
  done
  ;;
host)
  for r in 1 2 3; do
    for tree in "$PWD" ${BASE:+"$BASE"}; do
      cpu_speed "host $r"
      (cd "$tree" && export PYTHONPATH=$([ -d /tmp/site ] && echo /tmp/site:)$tree && \
        timeout 120 python3 bench/host_step.py --model "$SMOL" --device cuda --steps 300 \
        --detail 2>&1 | tail -1 | sed "s|^|$tree |" | tee -a "$OUT/host.txt")
    done
  done
  timeout 120 python3 bench/host_step.py --model "$SMOL" --device cuda --steps 300 --arrivals \
    2>&1 | tail -1 | tee -a "$OUT/host.txt"
  ;;
hops)
  for r in $(seq "${ROUNDS:-1}"); do
    for how in default --no-result-cache --hosted-router; do
      cpu_speed "hops $how $r"
      timeout 120 python3 bench/hop_marks.py --model "$SMOL" --load-format dummy \
        $([ $how = default ] || echo $how) 2>&1 | tee "$OUT/hops$how-$r.log" | tail -16
    done
  done
  ;;
ttft)
  for r in 1 2; do
    for tree in "$PWD" ${BASE:+"$BASE"}; do
      tag=$([ "$tree" = "$PWD" ] && echo this || echo base)
      cpu_speed "ttft $tag $r"
      in_tree "$tree" timeout 150 python3 bench/engine_ttft.py --model "$SMOL" \
        --load-format dummy --out "$OUT/ttft-$tag-$r" 2>&1 | tail -1 | sed "s/^/$tag-$r /" \
        | tee -a "$OUT/engine_ttft.txt"
    done
  done
  for tree in "$PWD" ${BASE:+"$BASE"}; do
    tag=$([ "$tree" = "$PWD" ] && echo this || echo base)
    in_tree "$tree" timeout 150 python3 bench/gpu_serving.py --model "$SMOL" --load-format dummy \
      --levels 1 --duration 10 --warmup 3 --engine-duration 4 --clients 1 --gateways 1 \
      --out "$OUT/small-one-$tag" 2>&1 | tee "$OUT/small-one-$tag.log" \
      | grep -E '^engine|"streams"' | cut -c1-400
  done
  ;;
one)
  one_rounds "${ROUNDS:-4}"
  ;;
poll)
  for r in $(seq "${ROUNDS:-3}"); do
    one_stream "$PWD" "small-one-polled-$r"
    KVMESH_BUSY_POLL=0 one_stream "$PWD" "small-one-asleep-$r"
  done
  timeout 200 python3 bench/nats_client_leg.py --rounds 1 --poll none,both 2>&1 | tail -20
  ;;
targets)
  one_rounds "${ROUNDS:-3}"
  mesh256_rounds 1
  timeout 120 python3 bench/decode_profile.py --out "$OUT" > "$OUT/profile_b1.log" 2>&1
  grep -E "engine step|failed" "$OUT/profile_b1.log"
  ;;
probe)
  timeout 150 python3 bench/persistent_probe.py --out "$OUT" 2>&1 | tee "$OUT/probe.log" | tail -1
  ;;
splits)
  timeout 300 python3 bench/decode_splits.py --tiles --out "$OUT" 2>&1 | tee "$OUT/splits.log"
  ;;
colocate)
  for r in $(seq "${ROUNDS:-2}"); do
    for router in hosted process; do
      cpu_speed "colocate $router $r"
      timeout 140 python3 bench/gpu_serving.py --model "$SMOL" --load-format dummy \
        --levels 1,32 --duration 8 --warmup 2 --engine-duration 4 --clients 8 --gateways 4 \
        $([ $router = hosted ] && echo --hosted-router) --out "$OUT/small-$router-$r" 2>&1 \
        | tee "$OUT/small-$router-$r.log" | grep -E '^engine|"streams"' | cut -c1-400
    done
  done
  ;;
colocate256)
  for r in $(seq "${ROUNDS:-2}"); do
    alone256 "$r"
    mesh256 "hosted-$r" "" --hosted-router
    mesh256 "process-$r"
  done
  ;;
spy)
  python3 bench/mesh_spy.py record "$OUT" & mesh256 spy; wait
  ;;
tracing)
  for r in 1 2 3; do
    mesh256 "off-$r"
    mesh256 "traced-$r" "" --tracing
    if [ -n "$BASE" ]; then mesh256 "base-traced-$r" "$BASE" --tracing; fi
  done
  ;;
tests)
  gpu_tests 25
  timeout 200 python3 bench/engine_host.py --runs 3 --presets smollm2-135m --modes async,sync \
    --out "$OUT" 2>&1 | tee "$OUT/engine_small.log" | grep -v '^run '
  for i in 1 2; do
    timeout 80 python3 -m bench.structured --device cuda --seqs 64 --tokens 256 \
      --model dummy:smollm2-135m --tokenizer $TOK
  done 2>&1 | tee "$OUT/structured.log" | tail -20
  ;;
engine8b)
  timeout 570 python3 bench/engine_host.py --runs 2 --presets llama-3.1-8b \
    --modes async,sync,hf-batch,hf-generate --out "$OUT" 2>&1 | tee "$OUT/engine_8b.log"
  ;;
serving)
  timeout 300 python3 bench/gpu_serving.py --model .bench_models/SmolLM2-135M-Instruct \
    --load-format dummy --levels 1,32,256 --duration 10 --warmup 3 --engine-duration 8 \
    --clients 8 --gateways 4 --out "$OUT" 2>&1 | tee "$OUT/serving_small.log" | tail -12
  timeout 260 python3 bench/gpu_serving.py --model .bench_models/llama-3.1-8b-shaped \
    --load-format dummy --levels 1,256 --duration 10 --warmup 3 --engine-duration 8 \
    --clients 8 --gateways 4 --out "$OUT" 2>&1 | tee "$OUT/serving_8b.log" | tail -10
  ;;
serving8b)
  timeout 300 python3 bench/gpu_serving.py --model .bench_models/llama-3.1-8b-shaped \
    --load-format dummy --levels 1,256 --stagger --duration 10 --warmup 3 --engine-duration 8 \
    --clients 8 --gateways 4 --out "$OUT" 2>&1 | tee "$OUT/serving_8b.log" | tail -10
  ;;
fused)
  for r in $(seq "${ROUNDS:-1}"); do
    for tree in "$PWD" $TREES; do
      for batch in 1 8; do
        in_tree "$tree" timeout 120 python3 bench/decode_profile.py --batch $batch \
          --out "$OUT" 2>&1 | grep -E "engine step|failed" | sed "s|^|$(basename "$tree") r$r |"
      done
    done
  done | tee "$OUT/fused.log"
  KVMESH_TOKENIZER_JSON=$TOK timeout 200 python3 -m pytest -q -p no:cacheprovider --timeout 100 \
    tests/gpu/test_skinny_compile.py tests/gpu/test_triton_kernels.py \
    tests/gpu/test_engine_gpu.py tests/gpu/test_async_scheduling_gpu.py \
    tests/gpu/test_fp8_kv.py 2>&1 | tee "$OUT/gpu_tests.log" | tail -3
  ;;
profile)
  timeout 280 python3 bench/decode_profile.py --out "$OUT" 2>&1 | tee "$OUT/profile_b1.log"
  timeout 200 python3 bench/decode_profile.py --batch 64 --out "$OUT" 2>&1 \
    | tee "$OUT/profile_b64.log"
  ;;
latency)
  timeout 120 python3 -m bench.structured --device cuda --seqs 64 --tokens 256 \
    --model dummy:smollm2-135m --tokenizer $TOK --grammar-lanes 1,16 2>&1 \
    | tee "$OUT/structured.log" | tail -3
  if [ -f /tmp/gguf/model.gguf ]; then  # the real SmolLM2 weights, carried in pieces
    timeout 100 python3 -m bench.structured --device cuda --seqs 64 --tokens 256 \
      --model /tmp/gguf/model.gguf 2>&1 | tee "$OUT/structured_real.log" | tail -1
  fi
  ttft_hops
  ;;
graphs)
  gpu_tests 8
  ttft_hops
  ;;
kernels)
  timeout 200 python3 bench/decode_tiles.py --out "$OUT" 2>&1 | tee "$OUT/decode_tiles.log" \
    | tail -7
  timeout 200 python3 bench/workload_profile.py --out "$OUT" 2>&1 \
    | tee "$OUT/workload_profile.log" | tail -9
  structured_runs
  ;;
engine)
  timeout 260 python3 bench/engine_host.py --runs 1 --presets llama-3.1-8b,smollm2-135m \
    --modes async --out "$OUT" 2>&1 | tee "$OUT/engine_host.log" | tail -4
  structured_runs
  step_phases
  timeout 60 python3 bench/decode_tiles.py --shapes b1 --out "$OUT" 2>&1 | tail -2
  timeout 60 python3 bench/blas_backends.py --out "$OUT" 2>&1 | tail -28
  ;;
gaps)
  timeout 300 python3 bench/step_gaps.py 2>&1 | tee "$OUT/step_gaps.log" | tail -12
  ;;
structured)
  structured_runs
  step_phases
  ;;
*) echo "phase: tests | engine8b | serving | profile | latency | graphs | kernels | engine |"\
    "gaps | structured | mesh256 | spy | interval | pinned | pinned-small | host | tracing |"\
    "ttft | one | poll | colocate | colocate256 | fused | hops"
  exit 2 ;;
esac
python3 bench/gpu_summary.py "$OUT"  # the call's numbers, last: only a few files come back
