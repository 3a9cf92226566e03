// Builds the etcd server at the release k8s.io/kubernetes v1.36.3 pairs with.
module secoctl.dev/clusterbuild/etcd

go 1.26.0

require go.etcd.io/etcd/server/v3 v3.6.8
