"""The web app's store: migrations, append-only label versions with optimistic concurrency, audit log."""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, text

import sarcoscope.store.store as store_module
from sarcoscope.store import ConflictError, NotFoundError, StaleVersionError, Store
from sarcoscope.store.labels import encode_labels
from sarcoscope.store.models import Base, as_utc
from store_rows import study_row

#: A PostgreSQL URL (postgresql+psycopg://...) to run these tests on too; its public schema is wiped.
POSTGRES_URL = os.environ.get("SARCOSCOPE_TEST_DATABASE_URL")


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    url = None
    if request.param == "postgresql":
        if not POSTGRES_URL:
            pytest.skip("set SARCOSCOPE_TEST_DATABASE_URL to a scratch PostgreSQL database to test it")
        url = POSTGRES_URL
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        engine.dispose()
    s = Store(tmp_path / "data", url)
    s.migrate()
    yield s
    s.close()


def test_migrations_create_exactly_the_model_schema(store: Store) -> None:
    assert store.schema_revision() == "0007"
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
    store.migrate()  # idempotent
    assert store.schema_revision() == "0007"


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A store whose database has no tables yet."""
    if request.param == "postgresql":
        if not POSTGRES_URL:
            pytest.skip("set SARCOSCOPE_TEST_DATABASE_URL to a scratch PostgreSQL database to test it")
        engine = create_engine(POSTGRES_URL)
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        engine.dispose()
    s = Store(tmp_path / "data", POSTGRES_URL if request.param == "postgresql" else None)
    yield s
    s.close()


def test_migrations_keep_the_data_and_downgrade(empty_database: Store) -> None:
    """0002 adds accounts, 0003 the upload a study came from, 0004 the users' roles, 0005 who changed the L3
    selection and when, 0006 the audit events' view keys, 0007 the label versions' quality scores; a study
    and its labels stay through a downgrade to 0001 and the upgrade back (the model reads the current schema
    only, so the rows are made at the head)."""
    from alembic import command
    from alembic.config import Config

    store = empty_database
    store.migrate()
    assert store.schema_revision() == "0007"
    study = store.add_study(study_row(), actor="alice")
    labels = np.ones((1, 4, 5), np.uint8)
    store.save_version(study.id, base_version=None, labels=labels, indices=[2], author="a", source="segment")
    store.add_user("bob", "hash", actor="cli")
    assert store.has_users()

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(store_module.__file__).parent / "migrations"))
    for revision in ("0006", "0005", "0004", "0003", "0002", "0001"):
        with store.engine.begin() as connection:
            cfg.attributes["connection"] = connection
            command.downgrade(cfg, revision)
        assert store.schema_revision() == revision
        with store.engine.connect() as connection:
            query = text("SELECT n_slices FROM studies WHERE id = :id")
            assert connection.execute(query, {"id": study.id}).scalar() == 10
    store.migrate()
    assert store.get_study(study.id).created_by == "alice"
    assert store.get_study(study.id).upload_id is None
    np.testing.assert_array_equal(store.load_labels(study.id).labels, labels)


def test_accounts_made_before_roles_are_editors_after_the_upgrade(empty_database: Store) -> None:
    """Upgrading a database whose accounts have no role (0003) makes them editors: what they do is unchanged
    but deleting studies and reading the audit log, which are an admin's (`sarcoscope users role`)."""
    store = empty_database
    store.migrate("0003")
    with store.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO users (name, password_hash, created_at, password_changed_at, failed_logins) "
                "VALUES ('alice', 'h', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 0)"
            )
        )
    store.migrate()
    assert store.schema_revision() == "0007"
    assert store.get_user("alice").role == "editor" and store.user_role("alice") == "editor"
    store.add_user("bob", "h", actor="cli")
    assert store.user_role("bob") == "editor"  # the default for new accounts too


#: A quality score as QualityAssessment.to_dict stores it.
QUALITY = {
    "version": 2,
    "slices": [{"engine_muscle_dice": 0.9123456789, "engine_muscle_area_diff": 0.0312}],
    "unavailable": {"expected_muscle_dice": "no network", "mirror_muscle_dice": "no network"},
    "second_opinion": "sarcoscope-unet-v7",
}


def test_a_database_with_label_versions_made_at_0006_stores_their_quality_scores_after_the_upgrade(
    empty_database: Store,
) -> None:
    """0007 adds the label versions' quality score (issue 13: the web app kept it in one process's memory):
    the versions saved before it have none, and a score is stored with one after the upgrade."""
    store = empty_database
    store.migrate("0006")
    study = study_row()
    labels = np.arange(20, dtype=np.uint8).reshape(1, 4, 5) % 5
    data, digest = encode_labels(labels)
    with store.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO studies (id, study_uid, series_uid, source_kind, n_slices, rows, cols, spacing, "
                "upload_bytes, status, created_at, created_by, selection_version) VALUES (:id, '1.2.3', "
                "'1.2.3.4', 'dicom', 10, 4, 5, '[2.0, 0.8, 0.8]', 1234, 'segmented', CURRENT_TIMESTAMP, "
                "'alice', 0)"
            ),
            {"id": study.id},
        )
        for version, source in ((1, "segment"), (2, "edit")):
            connection.execute(
                text(
                    "INSERT INTO label_versions (study_id, version, created_at, author, source, indices, "
                    "shape, data, sha256) VALUES (:id, :version, CURRENT_TIMESTAMP, 'alice', :source, '[2]', "
                    "'[1, 4, 5]', :data, :sha)"
                ),
                {"id": study.id, "version": version, "source": source, "data": data, "sha": digest},
            )
    store.migrate()
    assert store.schema_revision() == "0007"
    assert [(v.version, v.quality) for v in store.list_versions(study.id)] == [(2, None), (1, None)]
    np.testing.assert_array_equal(store.load_labels(study.id, 1).labels, labels)
    assert store.keep_quality(study.id, 1, digest, QUALITY)
    assert store.get_version(study.id, 1).quality == QUALITY
    assert store.get_version(study.id, 2).quality is None


def test_a_quality_score_is_stored_once_on_the_segmented_version_it_rates(store: Store) -> None:
    """Store.keep_quality, at the end of the web app's background score: only on the version scored, as it
    was scored (its labels' digest), never on a later or hand-edited version, never over a stored score, and
    not at all once the study is deleted."""
    study = store.add_study(study_row(), actor="alice")
    labels = np.ones((1, 4, 5), np.uint8)
    v1 = store.save_version(
        study.id, base_version=None, labels=labels, indices=[2], author="a", source="segment"
    )
    v2 = store.save_version(
        study.id, base_version=1, labels=labels * 2, indices=[2], author="b", source="edit"
    )
    assert not store.keep_quality(study.id, 1, v2.sha256, QUALITY)  # not the labels scored
    assert not store.keep_quality(study.id, 2, v2.sha256, QUALITY)  # an edit: no engine's output
    assert not store.keep_quality(study.id, 3, v1.sha256, QUALITY)  # no such version
    assert [v.quality for v in store.list_versions(study.id)] == [None, None]
    assert store.keep_quality(study.id, 1, v1.sha256, QUALITY)
    other = {**QUALITY, "second_opinion": "another"}
    assert not store.keep_quality(study.id, 1, v1.sha256, other)  # once
    assert [v.quality for v in store.list_versions(study.id)] == [None, QUALITY]
    store.delete_study(study.id, actor="alice", seen_version=2)
    assert not store.keep_quality(study.id, 1, v1.sha256, QUALITY)


def test_why_a_quality_score_failed_is_stored_until_a_score_replaces_it(store: Store) -> None:
    """Issue 13: a failed score was remembered in one server process's memory only. Why it failed is stored
    with the version, {"failed": reason}, under keep_quality's conditions; a score computed again replaces
    it, and nothing replaces a score (neither a failure nor another score)."""
    study = store.add_study(study_row(), actor="alice")
    v1 = store.save_version(
        study.id,
        base_version=None,
        labels=np.ones((1, 4, 5), np.uint8),
        indices=[2],
        author="a",
        source="segment",
    )
    failed = {"failed": "an error while computing it (MemoryError; the server log says where)"}
    assert store.keep_quality(study.id, 1, v1.sha256, failed)
    assert store.get_version(study.id, 1).quality == failed
    again = {"failed": "an error while computing it (OSError; the server log says where)"}
    assert store.keep_quality(study.id, 1, v1.sha256, again)  # tried again, failed again: the latest reason
    assert store.keep_quality(study.id, 1, v1.sha256, QUALITY)  # tried again: the score replaces it
    assert not store.keep_quality(study.id, 1, v1.sha256, failed)
    assert not store.keep_quality(study.id, 1, v1.sha256, {**QUALITY, "second_opinion": "another"})
    assert store.get_version(study.id, 1).quality == QUALITY


def test_roles_are_set_and_audited(store: Store) -> None:
    from sarcoscope.store import StoreError

    store.add_user("alice", "h1", actor="cli:root", role="viewer")
    store.add_session("a" * 64, "alice", "account", dt.datetime.now(dt.UTC) + dt.timedelta(hours=1), None)
    assert store.set_role("alice", "admin", actor="cli:root") == "viewer"
    assert store.user_role("alice") == "admin" and store.user_role("nobody") is None
    assert store.get_session("a" * 64) is not None  # her sessions go on, with the new role
    with pytest.raises(StoreError, match="Unknown role 'owner': choose one of admin, editor, viewer"):
        store.set_role("alice", "owner", actor="cli:root")  # type: ignore[arg-type]
    with pytest.raises(StoreError, match="Unknown role"):
        store.add_user("bob", "h", actor="cli:root", role="root")  # type: ignore[arg-type]
    with pytest.raises(NotFoundError, match="No user 'bob'"):
        store.set_role("bob", "viewer", actor="cli:root")
    events = [(e.actor, e.action, e.details) for e in reversed(store.audit_events())]
    assert events == [
        ("cli:root", "user-add", {"user": "alice", "role": "viewer"}),
        ("cli:root", "user-role", {"user": "alice", "role": "admin", "was": "viewer"}),
    ]


def test_versions_are_append_only_and_stale_saves_are_refused(store: Store) -> None:
    study = store.add_study(study_row(), actor="alice")
    labels = np.zeros((2, 4, 5), np.uint8)
    labels[0, 1, 1] = 1
    v1 = store.save_version(
        study.id, base_version=None, labels=labels, indices=[3, 4], author="engine", source="segment"
    )
    assert v1.version == 1 and v1.parent_version is None

    edited = labels.copy()
    edited[1, 2, 2] = 2
    v2 = store.save_version(
        study.id, base_version=1, labels=edited, indices=[3, 4], author="alice", source="edit"
    )
    assert v2.version == 2
    # Bob edited version 1 too: his save must be refused, not overwrite Alice's.
    with pytest.raises(StaleVersionError, match="version 2 was saved by alice") as info:
        store.save_version(
            study.id, base_version=1, labels=labels, indices=[3, 4], author="bob", source="edit"
        )
    assert info.value.latest == 2

    stack1 = store.load_labels(study.id, 1)
    stack2 = store.load_labels(study.id)
    assert stack2.version == 2 and stack2.indices == [3, 4]
    np.testing.assert_array_equal(stack1.labels, labels)
    np.testing.assert_array_equal(stack2.labels, edited)
    assert [v.version for v in store.list_versions(study.id)] == [2, 1]
    assert store.get_study(study.id).status == "edited"
    actions = [e.action for e in reversed(store.audit_events(study.id))]
    assert actions == ["upload", "labels-segment", "labels-edit"]


def test_concurrent_saves_on_the_same_base_keep_exactly_one(store: Store) -> None:
    study = store.add_study(study_row(), actor="alice")
    labels = np.zeros((1, 4, 5), np.uint8)
    store.save_version(study.id, base_version=None, labels=labels, indices=[0], author="e", source="segment")
    results: list[str] = []

    def save(who: str) -> None:
        try:
            store.save_version(
                study.id, base_version=1, labels=labels, indices=[0], author=who, source="edit"
            )
            results.append("ok")
        except StaleVersionError:
            results.append("stale")

    threads = [threading.Thread(target=save, args=(f"user{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["ok", "stale", "stale", "stale"]
    assert store.latest_version(study.id) == 2


def test_unknown_ids_and_duplicate_series(store: Store) -> None:
    with pytest.raises(NotFoundError):
        store.get_study("../../etc/passwd")
    with pytest.raises(NotFoundError):
        store.get_study("0" * 32)
    study = store.add_study(study_row(), actor="alice")
    with pytest.raises(NotFoundError, match="no label versions yet"):
        store.get_version(study.id)
    with pytest.raises(NotFoundError, match="no label version 7"):
        store.get_version(study.id, 7)
    with pytest.raises(Exception, match="already uploaded"):
        store.add_study(study_row(), actor="bob")


def test_search_update_delete(store: Store) -> None:
    a = store.add_study(study_row("1.2.3.4"), actor="alice")
    b = study_row("1.2.3.5")
    b.patient_id = "OTHER"
    store.add_study(b, actor="alice")
    assert [s.id for s in store.list_studies("pseudo")] == [a.id]
    assert len(store.list_studies()) == 2
    store.update_study(a.id, "alice", "select-l3", selection={"mode": "slice", "first": 4, "last": 4})
    assert store.get_study(a.id).selection == {"mode": "slice", "first": 4, "last": 4}
    assert store.series_dir(a) == store.data_dir / "ct" / "1.2.3" / "1.2.3.4"
    store.delete_study(a.id, "alice")
    with pytest.raises(NotFoundError):
        store.get_study(a.id)
    assert store.audit_events(a.id)[0].action == "delete-study"


def test_a_pacs_study_s_uid_leaves_the_events_without_a_study_id_with_its_last_study(store: Store) -> None:
    """A PACS study's series listed (`pacs-view-series`, no study id) named its StudyInstanceUID for good,
    after every study of it was deleted. Now the deletion of its last study leaves of those events who, what
    and when; while a study of it is left they are about that one and keep it, and another PACS study's keep
    theirs."""
    a = store.add_study(study_row("1.2.3.4"), actor="alice")
    b = store.add_study(study_row("1.2.3.5"), actor="alice")  # another series of the same study "1.2.3"
    store.audit("alice", "pacs-view-series", None, {"study_uid": "1.2.3", "series": 2})
    store.audit("alice", "pacs-view-series", None, {"study_uid": "1.2.9", "series": 1})

    def views() -> list[dict | None]:
        return [e.details for e in reversed(store.audit_events()) if e.action == "pacs-view-series"]

    store.delete_study(a.id, "alice", keep=False)
    assert views() == [{"study_uid": "1.2.3", "series": 2}, {"study_uid": "1.2.9", "series": 1}]
    store.delete_study(b.id, "alice", keep=False)
    assert views() == [{}, {"study_uid": "1.2.9", "series": 1}]


def test_search_matches_wildcards_literally(store: Store) -> None:
    plain = store.add_study(study_row("1.2.3.4"), actor="alice")
    special = study_row("1.2.3.5")
    special.series_description = "50%_dose \\ low"
    store.add_study(special, actor="alice")
    assert {s.id for s in store.list_studies("")} == {plain.id, special.id}
    assert [s.id for s in store.list_studies("%")] == [special.id]
    assert [s.id for s in store.list_studies("_")] == [special.id]
    assert [s.id for s in store.list_studies("\\")] == [special.id]
    assert [s.id for s in store.list_studies("0%_d")] == [special.id]
    assert store.list_studies("5_%") == []  # would match "50%" if "_" were a wildcard


def test_accounts_sessions_and_failure_counters(store: Store) -> None:
    store.add_user("alice", "h1", actor="cli:root")
    with pytest.raises(ConflictError, match="already exists"):
        store.add_user("alice", "h2", actor="cli:root")
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    store.add_session("a" * 64, "alice", "account", later, "127.0.0.1")
    store.add_session("b" * 64, "bob", "open", later, None)
    store.add_session("c" * 64, "alice", "account", later - dt.timedelta(hours=2), None)  # expired
    store.add_session("d" * 64, "carol", "account", later, None)  # prunes the expired one
    assert store.get_session("c" * 64) is None
    session = store.get_session("a" * 64)
    assert session is not None and session.user_name == "alice" and session.realm == "account"

    store.set_password("alice", "h3", actor="cli:root")  # ends alice's sessions only
    assert store.get_session("a" * 64) is None and store.get_session("b" * 64) is not None
    assert store.get_user("alice").password_hash == "h3"
    store.add_session("e" * 64, "alice", "account", later, None)
    store.remove_user("alice", actor="cli:root")
    assert store.get_user("alice") is None and store.get_session("e" * 64) is None
    with pytest.raises(NotFoundError):
        store.remove_user("alice", actor="cli:root")
    assert [e.action for e in reversed(store.audit_events())] == ["user-add", "user-passwd", "user-remove"]

    now = dt.datetime.now(dt.UTC)
    window = now - dt.timedelta(minutes=15)
    keys = ["user:x", "client:10.0.0.1"]
    for _ in range(3):
        counts = store.add_login_failure(keys, window)
    assert counts == {"user:x": 3, "client:10.0.0.1": 3}
    assert {k: c for k, (c, _) in store.login_failures(keys, window).items()} == counts
    # A window that ended counts as none, and is deleted with the next failure of any key.
    assert store.login_failures(keys, now + dt.timedelta(seconds=5)) == {}
    store.add_login_failure(["user:y"], now + dt.timedelta(seconds=5))
    assert store.login_failures(keys, window) == {}
    store.clear_login_failures("user:y")
    assert store.login_failures(["user:y"], window) == {}


def test_views_of_one_key_at_the_same_moment_are_one_audit_event(store: Store) -> None:
    """Store.audit_view decides from the audit log whether a look is a new view: looks of one sitting at the
    same moment (a page's tiles, two server processes) are one event, another key is its own, and a look
    after the time is a new one; each answers when the view's event was written."""
    import threading

    start, answers = threading.Barrier(8), []

    def look() -> None:
        start.wait()
        answers.append(store.audit_view("alice", "view-images", "s1", None, "10.0.0.1", "a" * 64, 1800))

    threads = [threading.Thread(target=look) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    events = store.audit_events()
    assert [(e.action, e.view_key) for e in events] == [("view-images", "a" * 64)]
    assert set(answers) == {as_utc(events[0].at)}
    store.audit_view("alice", "view-images", "s2", None, "10.0.0.1", "b" * 64, 1800)
    store.audit_view("alice", "view-images", "s1", None, "10.0.0.1", "a" * 64, 0)  # half an hour on
    assert [e.view_key for e in store.audit_events()] == ["a" * 64, "b" * 64, "a" * 64]
