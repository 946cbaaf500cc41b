#!/usr/bin/env bash
# One entry point for a fresh machine.
#   ./run.sh          set up .venv and run a real selection with the default model on examples/
#   ./run.sh test     set up .venv (with test extras), install Prometheus/promtool and start Redis when
#                     missing (Debian's packages), run the test suite
#   ./run.sh select ...   any other arguments are passed to the `iclsel` command
set -euo pipefail
cd "$(dirname "$0")"

VENV=${ICLSEL_VENV:-.venv}
PY=${PYTHON:-python3}

setup() {
    local extras=$1
    local stamp="$VENV/.installed-$extras-$(sha1sum pyproject.toml | cut -c1-12)"
    if [ ! -f "$stamp" ]; then
        [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
        "$VENV/bin/pip" install -q --upgrade pip >/dev/null
        # The pinned CPU wheel first, so that nothing pulls a multi-GB CUDA build; the package only asks
        # for torch>=2.13 (its `server` extra), and the same pin again keeps pip from replacing this one.
        "$VENV/bin/pip" install -q torch==2.13.0
        "$VENV/bin/pip" install -q -e ".[$extras]" torch==2.13.0
        touch "$stamp"
    fi
}

ensure_redis() {
    local url=${ICLSEL_TEST_REDIS_URL:-redis://127.0.0.1:6379/0}
    if "$VENV/bin/python" -c "import redis,sys; redis.Redis.from_url('$url', socket_timeout=2).ping()" 2>/dev/null; then
        return
    fi
    if ! command -v redis-server >/dev/null; then
        apt_install redis-server
    fi
    redis-server --port 6379 --bind 127.0.0.1 --save '' --appendonly no --daemonize yes >/dev/null
    for _ in $(seq 50); do
        "$VENV/bin/python" -c "import redis; redis.Redis.from_url('$url', socket_timeout=1).ping()" 2>/dev/null && return
        sleep 0.2
    done
    echo "redis did not start on 127.0.0.1:6379" >&2
    exit 1
}

apt_install() {
    if [ -z "${APT_UPDATED:-}" ]; then
        apt-get update -qq
        APT_UPDATED=1
    fi
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# tests/test_dashboard.py runs a real Prometheus and tests/test_compose.py its promtool (Debian's package)
ensure_prometheus() {
    if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
        apt_install prometheus
    fi
}

case "${1:-run}" in
    run)
        setup test
        exec "$VENV/bin/iclsel" select --pool examples/pool.jsonl --queries examples/queries.jsonl -k 4
        ;;
    test)
        shift
        setup test
        ensure_prometheus
        ensure_redis
        exec "$VENV/bin/python" -m pytest -q -ra "$@"
        ;;
    *)
        setup test
        exec "$VENV/bin/iclsel" "$@"
        ;;
esac
