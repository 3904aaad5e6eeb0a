"""The worker role: containerd + runc + CNI plugins + kubelet, joined with a token.

Modules, in the order ``mke worker`` uses them:

- ``join``: decode the token and check it against the API before anything is written
  (a bad token leaves nothing behind); read the cluster's worker settings.
- ``host``: facts about the host (cgroup version and driver, node address, resolv.conf,
  swap) and the kernel prerequisites mke can set (modules, sysctls), with a report.
- ``containerd``: containerd's generated config, the supervised process, and the import
  of ``<data-dir>/images/*.tar`` (the air-gap bundles) before kubelet starts.
- ``kubelet``: the KubeletConfiguration file, the bootstrap kubeconfig (TLS bootstrap),
  and the supervised kubelet.
- ``cni``: the bridge network provider (bridge + host-local + portmap + loopback, a
  per-node pod CIDR, routes between nodes and a masquerade rule kept by mke).
- ``node``: ``Worker``, which runs the components in order under one data-dir lock.
- ``cleanup``: what ``mke reset`` removes on a worker (mounts, processes, CNI state,
  iptables chains, routes, cgroups).
- ``manifests``: the cluster objects a controller applies for workers (their settings
  ConfigMap and RBAC).
"""
