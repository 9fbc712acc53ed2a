//go:build tools

// Package tools pins the etcd main package (go.etcd.io/etcd/server/v3 is
// itself a main package) so that go.mod and go.sum cover everything
// `go build go.etcd.io/etcd/server/v3` needs; nothing here is compiled.
package tools

import _ "go.etcd.io/etcd/server/v3"
