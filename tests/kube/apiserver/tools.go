//go:build tools

// Package tools pins the main packages Switchyard's tests build from Kubernetes (the
// control plane's kube-apiserver, and a node's kubelet, kube-proxy, kube-scheduler and
// kube-controller-manager) so that go.mod and go.sum cover everything `go build` needs
// for each; nothing here is compiled.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
