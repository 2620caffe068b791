//go:build tools

// Package peer pins the etcd server that scripts/peer builds: go.etcd.io/etcd/server/v3, its sibling
// modules replaced by the same release (its own go.mod points them at directories of its repository).
package peer

import _ "go.etcd.io/etcd/server/v3"
