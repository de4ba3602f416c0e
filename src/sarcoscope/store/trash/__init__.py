"""Deleted studies are kept for a while before they are erased: a study deleted by mistake (the wrong row
of the list) would otherwise take its images and every colleague's label versions with it, for good.

`trash/<study id>/` holds what the deletion removed from the database (`study.json`: the study row, who
deleted it and when, and a random id of that deletion; `label_versions.json`: its label versions) and its
files, moved there as they were (`ct/` the series, `cache/` the decoded images, `upload/` the upload's other
series when it was that upload's last study). `sarcoscope studies restore` puts it all back; the server
erases entries older than its `--keep-deleted-days` at start and at each deletion, and `sarcoscope studies
erase` erases at once (an erasure request).

Every step can be cut by a kill and is finished or undone at the next start (`recover`), before the server
deletes files no study owns: a deletion writes `.<id>.deleting/study.json` before its database rows go
(`begin`), moves the files in after (`finish`); a restore renames the entry to `.<id>.restoring` first, an
erasure to `.<id>.erasing` (checked, then audited: the audit event, which names the deletion's id, decides
it, so that the audit log and what is kept agree after a kill) and then `.<id>.erased` (removed). An
entry taken out of place is put back (an erase refused, a restore failed) only under `locks.no_put_back`,
under which a restore or erase that found no entry decides why: never "none is kept" for one put back
meanwhile. A restore or erasure holds its study's `locks/trash-<id>.lock` (`locks.working_on`, a shared
flock) from before it takes the entry out of place until its last step: `recover` handles an entry out of
place only when nobody holds it (its process killed), and leaves one that a `sarcoscope studies` command
beside the starting server is working on to that command. A restore (or a stopped one finished or undone)
decides an upload's other series under `Store.upload_lock` (then `Store.ct_lock`), from its look at them to
its commit or put-back, as the deletion of the upload's last study does: whichever comes first has them.

An entry whose record cannot be read (missing, empty, not JSON, incomplete: a damaged disk, a hand edit) is
never removed: it is left out of the list (which names it by its id), refused by a restore or an erasure, and
left as it is by `recover`, which says so once; while there is one, the server's start keeps the files no
study owns (they may be its: its record says which).

The modules, by concern: `operations` (what is done with the trash, in that order: what this package
exports), `records` (what an entry holds and how it is named), `moves` (a study's folders moved between
their places and an entry) and `locks` (who may take an entry out of place or put it back). `operations`
uses the other three; they use none of each other.
"""

from sarcoscope.store.trash.operations import (
    begin,
    deleted_studies,
    erase,
    erase_expired,
    finish,
    kept_deletion,
    recover,
    restore,
    shown_to,
)
from sarcoscope.store.trash.records import RECORD, VERSIONS, DeletedStudy, UnreadableRecordError, trash_dir

__all__ = [
    "RECORD",
    "VERSIONS",
    "DeletedStudy",
    "UnreadableRecordError",
    "begin",
    "deleted_studies",
    "erase",
    "erase_expired",
    "finish",
    "kept_deletion",
    "recover",
    "restore",
    "shown_to",
    "trash_dir",
]
