"""Container images made by mke itself: the OCI writer, and the system images a node builds."""
