#!/usr/bin/env bash
# Build the OpenTelemetry Collector that Switchyard's tracing tests export spans
# to: a minimal distribution (main.go beside this script, what the collector
# builder "ocb" would generate) with the OTLP receiver, the batch processor, the
# contrib file exporter (OTLP JSON, one object a line) and the health_check
# extension, from the pinned modules in go.mod/go.sum.
#
#   build.sh            # builds if missing, prints the binary's path last
#
# The binary lands in ${SWITCHYARD_CACHE:-$HOME/.cache/switchyard}/otelcol/<hash>/,
# where <hash> covers go.mod, go.sum, main.go and this script, so a version bump
# builds into a new directory and a warm machine does nothing. Go's module and
# build caches live under ${SWITCHYARD_CACHE}/go (shared with tests/kube/build.sh).
#
# Versions: every go.opentelemetry.io/collector module is at one release
# (v0.165.0 for the 0.x modules, v1.71.0 for the 1.x ones) and the contrib
# modules at the matching contrib release (v0.165.1); mixing releases fails to
# compile. `go mod tidy` needs -e here: a test-only import of the file exporter
# (contrib's otlpencodingextension v0.165.1) is not served by the module proxy,
# which does not matter to the build.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${SWITCHYARD_CACHE:-$HOME/.cache/switchyard}"
hash="$(cd "$here" && cat go.mod go.sum main.go build.sh | sha256sum | cut -c1-16)"
out="$cache/otelcol/$hash"
bin="$out/otelcol"

if [[ -x "$bin" ]]; then
    echo "$bin"
    exit 0
fi
command -v go >/dev/null || { echo "build.sh: go is not on PATH" >&2; exit 1; }
mkdir -p "$out" "$cache/go/mod" "$cache/go/build"

# Two runs at once (two pytest sessions) must not build into each other.
exec 9>"$out/.lock"
if command -v flock >/dev/null; then flock 9; fi
if [[ -x "$bin" ]]; then
    echo "$bin"
    exit 0
fi

export GOWORK=off GOTOOLCHAIN=local CGO_ENABLED=0
export GOMODCACHE="$cache/go/mod" GOCACHE="$cache/go/build"
# -mod=readonly: a go.sum that does not cover the build is an error, never a
# silent update. -buildvcs=false: the sources need not be in a git work tree.
export GOFLAGS="-mod=readonly -buildvcs=false"

start=$SECONDS
echo "build.sh: building otelcol ($(awk '$1 == "go.opentelemetry.io/collector/otelcol" { print $2 }' "$here/go.mod")) ..." >&2
(cd "$here" && go build -trimpath -ldflags "-s -w" -o "$out/.otelcol.tmp" .)
mv -f "$out/.otelcol.tmp" "$bin"
echo "build.sh: built otelcol in $((SECONDS - start))s" >&2
echo "$bin"
