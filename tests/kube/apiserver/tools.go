//go:build tools

// Package tools pins the kube-apiserver main package so that go.mod and
// go.sum cover everything `go build k8s.io/kubernetes/cmd/kube-apiserver`
// needs; nothing here is compiled.
package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
