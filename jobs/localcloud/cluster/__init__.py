"""A local Kubernetes from source: control plane, kwok nodes, Kueue and one real node, for users, tests and benchmarks."""
