#!/usr/bin/env bash
# Regenerates src/agent_state/_gen from the wire contract.
#
#   scripts/generate.sh [SOURCE]
#
# SOURCE is what buf exports the contract from: by default the module this
# project depends on (buf.yaml), buf.build/agynio/api; where the Buf Schema
# Registry cannot be reached, a local directory holding the same module
# (for example ../shared/contract). Every file in the output is generated:
# never edit it, run this again.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
source_ref=${1:-buf.build/agynio/api}
proto_path=agynio/api/agent_state/v1
python=${PYTHON:-$root/.venv/bin/python}
buf=$root/tools/buf/node_modules/.bin/buf
out=$root/src/agent_state/_gen

if [ ! -x "$buf" ]; then
  # npm install (not ci): the lock pins buf, and binaries for platforms the
  # registry lacks at this version are optional.
  npm install --prefix "$root/tools/buf" --no-save --no-audit --no-fund --loglevel=error
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ -d "$source_ref" ]; then
  # A local module directory: export it whole (it holds only this contract).
  "$buf" export "$source_ref" -o "$work/proto"
else
  "$buf" export "$source_ref" --path "$proto_path" -o "$work/proto"
fi

wkt=$("$python" -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')
mkdir -p "$work/gen"
"$python" -m grpc_tools.protoc \
  -I "$work/proto" -I "$wkt" \
  --python_out="$work/gen" --pyi_out="$work/gen" --grpc_python_out="$work/gen" \
  "$proto_path/agent_state.proto"

rm -rf "$out"
mkdir -p "$out"
for f in agent_state_pb2.py agent_state_pb2.pyi agent_state_pb2_grpc.py; do
  # protoc writes absolute imports rooted at the proto path; the modules live
  # inside this package instead, so the one sibling import becomes relative.
  sed -e 's/^from agynio\.api\.agent_state\.v1 import /from . import /' \
    "$work/gen/$proto_path/$f" > "$out/$f"
done
cat > "$out/__init__.py" <<'PY'
"""Code generated from agynio/api/agent_state/v1/agent_state.proto by
scripts/generate.sh (`make generate`). DO NOT EDIT."""
PY
touch "$out/py.typed"
echo "generated $(ls "$out" | wc -l) files in ${out#"$root"/} from $source_ref"
