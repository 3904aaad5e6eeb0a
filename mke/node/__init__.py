"""What every role shares on one host: the data dir (layout, lock, status file), host
facts (addresses, names, the advertised API URL), atomic file writes and the
process/pid-file helpers.

Both ``mke server`` (``mke.controller``) and ``mke worker`` (``mke.worker.node``) depend
on this package; neither depends on the other. Everything here uses the standard
library only, so ``mke status``, ``reset``, ``kubectl`` and ``version`` stay light.
"""
