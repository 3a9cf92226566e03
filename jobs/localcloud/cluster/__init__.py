"""A local Kubernetes built from source (control plane, kwok nodes, Kueue, one real node) for users, tests and
benchmarks."""
