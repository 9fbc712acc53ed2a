#!/usr/bin/env bash
# Build CoreDNS, the cluster DNS of the node tests, from the Go module proxy. Prints the
# binary's path last; cached under ${SWITCHYARD_CACHE:-~/.cache/switchyard}/coredns.
set -euo pipefail

version=v1.15.0
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${SWITCHYARD_CACHE:-$HOME/.cache/switchyard}"
out="$cache/coredns/$(sha256sum "$here/build.sh" | cut -c1-16)"
if [[ -x "$out/coredns" ]]; then
    echo "$out/coredns"
    exit 0
fi
mkdir -p "$out" "$cache/go/mod" "$cache/go/build"
exec 9>"$out/.lock"
command -v flock >/dev/null && flock 9
[[ -x "$out/coredns" ]] && { echo "$out/coredns"; exit 0; }
export GOWORK=off GOTOOLCHAIN=local GOMODCACHE="$cache/go/mod" GOCACHE="$cache/go/build" GOFLAGS=-mod=mod
start=$SECONDS
dir="$(go mod download -json "github.com/coredns/coredns@$version" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp -r "$dir" "$work/coredns"
chmod -R u+w "$work/coredns"
echo "build.sh: building coredns $version ..." >&2
(cd "$work/coredns" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/.coredns.tmp" .)
mv -f "$out/.coredns.tmp" "$out/coredns"
echo "build.sh: built coredns in $((SECONDS - start))s" >&2
echo "$out/coredns"
