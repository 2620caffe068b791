//go:build tools

// Package peer pins the Kubernetes API server that scripts/peer builds: k8s.io/kubernetes at one
// release, each staging module (k8s.io/api, k8s.io/apiserver, ...) replaced by its release of the same
// minor (v0.37.2 for v1.37.2), as the main repository does with its ./staging directories.
package peer

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
