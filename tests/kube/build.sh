#!/usr/bin/env bash
# Build the real Kubernetes control plane that Switchyard's kube tests run
# against (kube-apiserver and etcd, plus helm), from the pinned Go modules in
# tests/kube/{apiserver,etcd,helm}.
#
#   tests/kube/build.sh            # builds what is missing, prints the bin dir last
#
# Binaries land in ${SWITCHYARD_CACHE:-$HOME/.cache/switchyard}/kube/<hash>/bin,
# where <hash> covers the go.mod/go.sum/tools.go files and this script (the
# version ldflags live here), so a version bump builds into a new directory and
# a warm machine does nothing. Go's module and build caches live under
# ${SWITCHYARD_CACHE}/go so they survive with it.
#
# SWITCHYARD_KUBE_BINARIES limits what is built (default: "kube-apiserver etcd helm";
# a node adds kubelet, kube-proxy, kube-scheduler and kube-controller-manager).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${SWITCHYARD_CACHE:-$HOME/.cache/switchyard}"
wanted="${SWITCHYARD_KUBE_BINARIES:-kube-apiserver etcd helm}"

hash="$(
    cd "$here"
    cat apiserver/go.mod apiserver/go.sum apiserver/tools.go \
        etcd/go.mod etcd/go.sum etcd/tools.go \
        helm/go.mod helm/go.sum helm/tools.go \
        build.sh | sha256sum | cut -c1-16
)"
out="$cache/kube/$hash"
bin="$out/bin"

# The version a module requires, read from its go.mod (one source of truth).
required() { # <module dir> <module path>
    awk -v m="$2" '$1 == m && $2 ~ /^v/ { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' \
        "$here/$1/go.mod"
}

k8s_version="$(required apiserver k8s.io/kubernetes)"       # v1.37.2
etcd_version="$(required etcd go.etcd.io/etcd/server/v3)"   # v3.7.0
helm_version="$(required helm helm.sh/helm/v3)"              # v3.22.0
k8s_minor="${k8s_version#v1.}"
k8s_minor="${k8s_minor%%.*}"

missing=()
for b in $wanted; do
    [[ -x "$bin/$b" ]] || missing+=("$b")
done
if [[ ${#missing[@]} -eq 0 ]]; then
    echo "$bin"
    exit 0
fi

command -v go >/dev/null || { echo "build.sh: go is not on PATH" >&2; exit 1; }
mkdir -p "$bin" "$cache/go/mod" "$cache/go/build"

# Two runs at once (two pytest sessions) must not build into each other.
exec 9>"$out/.lock"
if command -v flock >/dev/null; then flock 9; fi

export GOWORK=off GOTOOLCHAIN=local CGO_ENABLED=0
export GOMODCACHE="$cache/go/mod" GOCACHE="$cache/go/build"
# -mod=readonly: a go.sum that does not cover the build is an error, never a
# silent update. -buildvcs=false: the main packages come from the module cache.
export GOFLAGS="-mod=readonly -buildvcs=false"

build() { # <name> <module dir> <package> <ldflags>
    local name="$1" dir="$2" pkg="$3" ldflags="$4"
    if [[ -x "$bin/$name" ]]; then return 0; fi
    local start=$SECONDS
    echo "build.sh: building $name ($pkg) ..." >&2
    (cd "$here/$dir" && go build -trimpath -ldflags "$ldflags" -o "$bin/.$name.tmp" "$pkg")
    mv -f "$bin/.$name.tmp" "$bin/$name"
    echo "build.sh: built $name in $((SECONDS - start))s" >&2
}

for b in $wanted; do
    case "$b" in
    kube-apiserver | kubelet | kube-proxy | kube-scheduler | kube-controller-manager)
        # Without these the binaries report v0.0.0-master, which breaks Helm's
        # kubeVersion checks and the node's version skew checks. Same keys as
        # kubernetes' hack/lib/version.sh.
        fl="-s -w"
        for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
            fl+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
            fl+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
        done
        build "$b" apiserver "k8s.io/kubernetes/cmd/$b" "$fl"
        ;;
    etcd)
        # etcd's version is a constant in go.etcd.io/etcd/api/v3/version.
        build etcd etcd go.etcd.io/etcd/server/v3 "-s -w"
        ;;
    helm)
        helm_k8s="$(cd "$here/helm" && go list -m -f '{{.Version}}' k8s.io/client-go)" # v0.37.0
        helm_k8s_minor="${helm_k8s#v0.}"
        helm_k8s_minor="${helm_k8s_minor%%.*}"
        fl="-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version"
        fl+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
        for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
            fl+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$helm_k8s_minor"
        done
        build helm helm helm.sh/helm/v3/cmd/helm "$fl"
        ;;
    *)
        echo "build.sh: unknown binary '$b'" >&2
        exit 2
        ;;
    esac
done

printf 'kubernetes %s\netcd %s\nhelm %s\n' "$k8s_version" "$etcd_version" "$helm_version" >"$out/versions.txt"
echo "$bin"
