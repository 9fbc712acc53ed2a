#!/usr/bin/env bash
# Build a real Ollama server from the Go module proxy (CPU backend through cgo), for the
# node tests' in-cluster Ollama image. Prints the binary's path last.
#
# The module zip has no vendor/ directories, so the four headers llama.cpp includes
# from there come from Debian's packages (nlohmann-json3-dev, libstb-dev) and from the
# miniaudio sdist on PyPI. Cached under ${SWITCHYARD_CACHE:-~/.cache/switchyard}/ollama.
set -euo pipefail

version=v0.17.4
miniaudio=miniaudio==1.71
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${SWITCHYARD_CACHE:-$HOME/.cache/switchyard}"
hash="$(cat "$here/build.sh" | sha256sum | cut -c1-16)"
out="$cache/ollama/$hash"
if [[ -x "$out/ollama" ]]; then
    echo "$out/ollama"
    exit 0
fi
mkdir -p "$out" "$cache/go/mod" "$cache/go/build"
exec 9>"$out/.lock"
command -v flock >/dev/null && flock 9
if [[ -x "$out/ollama" ]]; then
    echo "$out/ollama"
    exit 0
fi
for header in /usr/include/nlohmann/json.hpp /usr/include/stb/stb_image.h; do
    [[ -f $header ]] || { echo "build.sh: $header is missing (apt-get install nlohmann-json3-dev libstb-dev)" >&2; exit 1; }
done

export GOWORK=off GOTOOLCHAIN=local GOMODCACHE="$cache/go/mod" GOCACHE="$cache/go/build" GOFLAGS=-mod=mod
start=$SECONDS
dir="$(go mod download -json "github.com/ollama/ollama@$version" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp -r "$dir" "$work/ollama"
chmod -R u+w "$work/ollama"
vendor="$work/ollama/llama/llama.cpp/vendor"
mkdir -p "$vendor/nlohmann" "$vendor/stb" "$vendor/miniaudio"
cp /usr/include/nlohmann/json.hpp /usr/include/nlohmann/json_fwd.hpp "$vendor/nlohmann/"
cp /usr/include/stb/stb_image.h "$vendor/stb/"
python3 -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
    "$miniaudio" -d "$work/sdist" >/dev/null
tar -xzf "$work"/sdist/miniaudio-*.tar.gz -C "$work/sdist"
cp "$(find "$work/sdist" -name miniaudio.h -path '*miniaudio/miniaudio.h' | head -1)" "$vendor/miniaudio/"
echo "build.sh: building ollama $version (cgo, CPU backend) ..." >&2
(cd "$work/ollama" && CGO_ENABLED=1 go build -trimpath \
    -ldflags "-s -w -X github.com/ollama/ollama/version.Version=${version#v}" \
    -o "$out/.ollama.tmp" .)
mv -f "$out/.ollama.tmp" "$out/ollama"
echo "build.sh: built ollama in $((SECONDS - start))s" >&2
echo "$out/ollama"
