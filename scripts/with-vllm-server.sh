#!/usr/bin/env bash
# Run a command against a real vLLM server (CPU build) serving the embedded SmolLM2 prior.
#
#   scripts/with-vllm-server.sh COMMAND...
#
# Exports the embedded model as a Hugging Face folder (once), starts vLLM's OpenAI-compatible
# server on 127.0.0.1:$VLLM_PORT from $VLLM_VENV, waits until it answers, runs COMMAND with
# LLMRL_TEST_VLLM_URL set, and stops the server whatever happens. COMMAND's exit code is ours.
set -euo pipefail

VENV=${VENV:-.venv}
VLLM_VENV=${VLLM_VENV:-.venv-vllm}
VLLM_PORT=${VLLM_PORT:-8765}
VLLM_START_TIMEOUT=${VLLM_START_TIMEOUT:-600}
state=${LLMRL_CACHE_DIR:-$PWD/.cache/llmrl}/vllm
mkdir -p "$state"
log=$state/server.log

model=$("$VENV/bin/python" -c "
from llmrl_cli.engine.models import resolve_model_path, EMBEDDED_MODEL
print(resolve_model_path(EMBEDDED_MODEL))")

# 2 cores here: vLLM must not reserve one for itself, and binds its threads to both.
export VLLM_CPU_NUM_OF_RESERVED_CPU=${VLLM_CPU_NUM_OF_RESERVED_CPU:-0}
export VLLM_CPU_OMP_THREADS_BIND=${VLLM_CPU_OMP_THREADS_BIND:-0-$(( $(nproc) - 1 ))}
export VLLM_CACHE_ROOT=$state/cache HF_HUB_OFFLINE=1
if curl -s "http://127.0.0.1:$VLLM_PORT/" >/dev/null 2>&1; then
    echo "port $VLLM_PORT is already in use; set VLLM_PORT to a free port" >&2
    exit 1
fi
echo "starting vLLM on 127.0.0.1:$VLLM_PORT with $model (log: $log)"
setsid "$VLLM_VENV/bin/python" -m vllm.entrypoints.openai.api_server \
    --model "$model" --served-model-name SmolLM2-135M-Instruct \
    --host 127.0.0.1 --port "$VLLM_PORT" --dtype float32 --seed 0 \
    --max-model-len 2048 --gpu-memory-utilization 0.3 >"$log" 2>&1 &
server=$!
stop() { kill -TERM -- "-$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; }
trap stop EXIT

started=$SECONDS
until curl -sf "http://127.0.0.1:$VLLM_PORT/v1/models" >/dev/null; do
    if ! kill -0 "$server" 2>/dev/null; then
        echo "vLLM server exited during start-up; the end of its log:" >&2
        tail -n 30 "$log" >&2
        exit 1
    fi
    if (( SECONDS - started > VLLM_START_TIMEOUT )); then
        echo "vLLM server did not answer within ${VLLM_START_TIMEOUT}s; see $log" >&2
        exit 1
    fi
    sleep 2
done
echo "vLLM answered after $(( SECONDS - started ))s"
LLMRL_TEST_VLLM_URL="http://127.0.0.1:$VLLM_PORT" "$@"
