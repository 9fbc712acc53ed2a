#!/usr/bin/env bash
# Build the node's NetworkPolicy enforcer, kube-router's firewall, from the Go module
# proxy. Prints the binary's path last; cached under
# ${SWITCHYARD_CACHE:-~/.cache/switchyard}/netpol.
#
# kube-router (iptables and ipset) rather than sigs.k8s.io/kube-network-policies: the
# latter hands each new connection to user space with nftables' `queue` statement,
# which needs the kernel's nft_queue (CONFIG_NFT_QUEUE), and the kernels these tests
# run on are built without it ("Could not process rule: No such file or directory").
# v2.1.0 is the version the module proxy serves here; only its firewall runs (no
# router, no service proxy, no health or metrics port), so nothing listens.
set -euo pipefail

version=v2.1.0
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${SWITCHYARD_CACHE:-$HOME/.cache/switchyard}"
out="$cache/netpol/$(sha256sum "$here/build.sh" | cut -c1-16)"
if [[ -x "$out/kube-router" ]]; then
    echo "$out/kube-router"
    exit 0
fi
command -v go >/dev/null || { echo "build.sh: go is not on PATH" >&2; exit 1; }
mkdir -p "$out" "$cache/go/mod" "$cache/go/build"
exec 9>"$out/.lock"
command -v flock >/dev/null && flock 9
[[ -x "$out/kube-router" ]] && { echo "$out/kube-router"; exit 0; }
export GOWORK=off GOTOOLCHAIN=local GOMODCACHE="$cache/go/mod" GOCACHE="$cache/go/build" GOFLAGS=-mod=mod
start=$SECONDS
dir="$(go mod download -json "github.com/cloudnativelabs/kube-router/v2@$version" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp -r "$dir" "$work/kube-router"
chmod -R u+w "$work/kube-router"
echo "build.sh: building kube-router $version ..." >&2
(cd "$work/kube-router" && CGO_ENABLED=0 go build -trimpath \
    -ldflags "-s -w -X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=$version" \
    -o "$out/.kube-router.tmp" ./cmd/kube-router)
mv -f "$out/.kube-router.tmp" "$out/kube-router"
echo "build.sh: built kube-router in $((SECONDS - start))s" >&2
echo "$out/kube-router"
