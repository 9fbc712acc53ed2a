//go:build tools

// Package tools pins the helm main package so that go.mod and go.sum cover
// everything `go build helm.sh/helm/v3/cmd/helm` needs; nothing here is
// compiled.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
