"""Permission problems on an inbox: what the daemon's user lacks, in words an operator can act on.

Why: shared inboxes are often ``chmod 1777`` (sticky, world-writable, like /tmp) so that
everyone can drop files. In a sticky folder only a file's owner, the folder's owner or root may
rename or delete a file, so a daemon that is not root cannot claim other users' files there:
every claim fails with EPERM. Reported as a bare error on every poll, forever, that looked like
a flaky share. Instead the daemon says it once per inbox (log, STATUS, ``smaskd status``),
leaves the files where they are and keeps working on everything else (see service.py).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from smaskd.daemon.statedir import daemon_user

__all__ = ["DENIED", "explain"]

DENIED = frozenset({errno.EPERM, errno.EACCES})


def _owner(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def explain(inbox: Path, error: OSError) -> str:
    """Why the daemon cannot claim (or set up) in ``inbox``, and how to set the inbox up."""
    user = daemon_user()
    what = f"{os.strerror(error.errno or errno.EACCES)}"
    if error.filename:
        what = f"{what} ({os.fsdecode(error.filename)})"
    try:
        st = os.stat(inbox)
    except OSError:
        st = None
    if st is not None and st.st_mode & stat.S_ISVTX and os.geteuid() != 0:
        return (f"cannot claim files: {what}. The inbox is sticky (mode "
                f"{stat.S_IMODE(st.st_mode):o}) and the daemon runs as {user!r}, not root: in a "
                "sticky folder only a file's owner (or the folder's owner, or root) may move it, "
                "so other users' files stay where they are. Set the inbox up without the sticky "
                "bit, writable by a group shared by the writers and the daemon's user "
                f"(chgrp GROUP {inbox}; chmod 2770 {inbox}; add {user!r} to GROUP), or make "
                f"{user!r} the inbox's owner")
    owner = _owner(st.st_uid) if st is not None else "?"
    return (f"cannot claim files or create its .smaskd folder: {what}. The daemon's user {user!r} "
            f"needs read, write and search permission on the inbox (owner {owner}) and its "
            f".smaskd folder, e.g. chgrp GROUP {inbox}; chmod 2770 {inbox}; add {user!r} to GROUP")
