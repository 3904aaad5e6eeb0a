"""``mke cluster``: a whole cluster's lifecycle from one machine, over SSH (docs/cluster.md).

spec.py     the cluster file (YAML): hosts, SSH settings, the cluster's mke.yaml, the file to ship
ssh.py      one host's SSH connection (asyncssh): known_hosts checked, commands, atomic uploads
probe.py    what ``mke cluster probe`` reports from a host (runs there, by the shipped mke)
apply.py    apply: connect, probe, upload, sysinfo, install, first controller, joins, Ready
ops.py      status, kubeconfig, reset
upgrade.py  upgrade: the plan (order, batches, skips), the rolling run that stops at the first failure
api.py      the cluster's Kubernetes API from here, through a controller's SSH connection (port forward)
drain.py    cordon, drain (evictions: PodDisruptionBudgets hold), uncordon
backup.py   backup: mke backup on a controller, the archive fetched over SFTP and checked
"""
