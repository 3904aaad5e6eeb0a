"""``mke cluster``: a whole cluster's lifecycle from one machine, over SSH (docs/cluster.md).

spec.py     the cluster file (YAML): hosts, SSH settings, the cluster's mke.yaml, the file to ship
ssh.py      one host's SSH connection (asyncssh): known_hosts checked, commands, atomic uploads
probe.py    what ``mke cluster probe`` reports from a host (runs there, by the shipped mke)
apply.py    apply: connect, probe, upload, sysinfo, install, first controller, joins, Ready
ops.py      status, kubeconfig, reset
"""
