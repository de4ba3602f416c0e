"""Long-running services: the web app (`serve`, `users`) and the DICOM node (`listen`)."""

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape as esc
from rich.table import Table

from sarcoscope.cli.common import (
    ENGINE_HELP,
    DicomwebTokenFileOption,
    PacsConnectTimeoutOption,
    PacsTimeoutOption,
    app,
    console,
    run,
)
from sarcoscope.errors import SarcoscopeError
from sarcoscope.fileio import check_output_folder
from sarcoscope.segmentation.base import DEFAULT_ENGINE


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on; anything but loopback needs a login.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    data_dir: Annotated[Path, typer.Option(help="Folder for the database and stored CT files.")] = Path(
        "sarcoscope-data"
    ),
    database_url: Annotated[
        str | None, typer.Option(envvar="SARCOSCOPE_DATABASE_URL", help="SQLAlchemy URL (default: SQLite).")
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option(help="File holding the access token of a single-user server (or set SARCOSCOPE_TOKEN)."),
    ] = None,
    token_user: Annotated[
        str | None,
        typer.Option(envvar="SARCOSCOPE_TOKEN_USER", help="Name the audit log gives the token's holder."),
    ] = None,
    token: Annotated[str | None, typer.Option(hidden=True)] = None,
    max_upload_mb: Annotated[int, typer.Option(help="Largest accepted upload.")] = 4096,
    engine: Annotated[str, typer.Option(help="Segmentation engine for 'Segment selected'.")] = DEFAULT_ENGINE,
    session_hours: Annotated[float, typer.Option(help="A login lasts this many hours.")] = 12.0,
    idle_minutes: Annotated[
        float,
        typer.Option(help="A login ends sooner after this many minutes without a request (open mode: not)."),
    ] = 30.0,
    keep_deleted_days: Annotated[
        float,
        typer.Option(
            help="Keep a deleted study this many days ('sarcoscope studies restore' puts it back); 0: erase "
            "at once."
        ),
    ] = 30.0,
    secure_cookies: Annotated[
        bool, typer.Option(help="Mark the session cookie Secure even for requests seen as plain HTTP.")
    ] = False,
    trusted_proxy: Annotated[
        str,
        typer.Option(help="Comma-separated addresses of reverse proxies whose X-Forwarded-* headers count."),
    ] = "127.0.0.1",
    dicomweb_url: Annotated[
        str | None,
        typer.Option(
            envvar="SARCOSCOPE_DICOMWEB_URL",
            help="DICOMweb root of a PACS (e.g. http://pacs:8042/dicom-web): search, import, push results.",
        ),
    ] = None,
    public_host: Annotated[
        str | None,
        typer.Option(help="Address users open behind a reverse proxy (host name or URL); printed at start."),
    ] = None,
    pacs_connect_timeout: PacsConnectTimeoutOption = 10.0,
    pacs_timeout: PacsTimeoutOption = 60.0,
    dicomweb_token_file: DicomwebTokenFileOption = None,
) -> None:
    """Run the web labeling application (browser UI and API) at http://HOST:PORT/."""
    from sarcoscope.web import serve as run_server
    from sarcoscope.web.settings import load_token

    def body() -> None:
        if token is not None:
            raise SarcoscopeError(
                "--token is not accepted: a token on the command line is visible to every user of this "
                "machine. Put it in a file readable only by you (--token-file) or in SARCOSCOPE_TOKEN."
            )
        if dicomweb_url or dicomweb_token_file is not None:  # the DICOMweb client (pydicom, requests) only
            # for a server that has a PACS: the start without one stays light (tests/web/test_startup.py)
            from sarcoscope.pacs.dicomweb_auth import check_auth, use_token_file

            use_token_file(dicomweb_token_file)
            if dicomweb_url:  # basic auth and a bearer token both: refused now, not at every PACS request
                check_auth(dicomweb_url)
        run_server(
            host=host,
            port=port,
            data_dir=data_dir,
            database_url=database_url,
            token=load_token(token_file),
            token_user=token_user,
            max_upload_mb=max_upload_mb,
            engine=engine,
            session_hours=session_hours,
            idle_minutes=idle_minutes,
            keep_deleted_days=keep_deleted_days,
            secure_cookies=secure_cookies,
            trusted_proxies=trusted_proxy,
            dicomweb_url=dicomweb_url,
            public_host=public_host,
            pacs_waits=(pacs_connect_timeout, pacs_timeout),
        )

    run(body)


@app.command()
def listen(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for received images and results.")],
    port: Annotated[int, typer.Option(help="TCP port of the C-STORE receiver.")] = 11112,
    host: Annotated[
        str, typer.Option(help="Address to listen on (0.0.0.0: every interface, for a scanner or PACS).")
    ] = "127.0.0.1",
    aet: Annotated[str, typer.Option(help="This node's AE title.")] = "SARCOSCOPE",
    settle: Annotated[
        float, typer.Option(help="Seconds without a new image after which a series is complete.")
    ] = 30.0,
    engine: Annotated[str, typer.Option(help=ENGINE_HELP)] = DEFAULT_ENGINE,
    push_to: Annotated[
        str | None, typer.Option(help="Send the SEG, SR and QC capture by C-STORE to AE_TITLE@host:port.")
    ] = None,
    push_dicomweb: Annotated[
        str | None,
        typer.Option(help="Store the SEG, SR and QC capture with STOW-RS on this DICOMweb root URL."),
    ] = None,
    push_connect_timeout: PacsConnectTimeoutOption = 10.0,
    push_timeout: PacsTimeoutOption = 60.0,
    dicomweb_token_file: DicomwebTokenFileOption = None,
    send_attempts: Annotated[
        int,
        typer.Option(
            help="Attempts to send a series' results (5 minutes apart) before giving up on them; they are "
            "kept, and a restart tries once more."
        ),
    ] = 288,
    allow_aet: Annotated[
        list[str] | None, typer.Option("--allow-aet", help="Accept images only from this calling AE title.")
    ] = None,
    keep_images: Annotated[
        bool, typer.Option(help="Keep the received images after a successful analysis.")
    ] = False,
    late_window: Annotated[
        float,
        typer.Option(
            help="Seconds an analysed series' images are kept (unless --keep-images): images of it arriving "
            "until then make the whole series analysed again."
        ),
    ] = 600.0,
) -> None:
    """Receive CT series by DICOM C-STORE, analyse each complete series, send the results back."""
    import logging

    from sarcoscope.pacs.dicomweb_auth import use_token_file
    from sarcoscope.pacs.node import ListenSettings, Node, parse_peer

    def body() -> None:
        if port < 1 or port > 65535:
            raise SarcoscopeError("--port must be 1 to 65535.")
        check_output_folder(out)
        use_token_file(dicomweb_token_file)
        node = Node(
            ListenSettings(
                out=out,
                host=host,
                port=port,
                aet=aet,
                settle=settle,
                engine=engine,
                push_to=parse_peer(push_to) if push_to else None,
                push_dicomweb=push_dicomweb,
                push_connect_timeout=push_connect_timeout,
                push_timeout=push_timeout,
                send_attempts=send_attempts,
                allowed_aets=list(allow_aet or []),
                keep_images=keep_images,
                late_window=late_window,
            )
        )
        if not logging.getLogger("sarcoscope").handlers:
            logging.basicConfig(level=logging.INFO, format="sarcoscope: %(message)s")
        node.start()
        node.run()

    run(body)


users_app = typer.Typer(
    no_args_is_help=True,
    help="User accounts of the web application (passwords are read from a prompt or stdin, never argv).",
)
app.add_typer(users_app, name="users")
DataDirOption = Annotated[Path, typer.Option(help="The server's data folder.")]
DatabaseOption = Annotated[
    str | None, typer.Option(envvar="SARCOSCOPE_DATABASE_URL", help="SQLAlchemy URL (default: SQLite).")
]
PasswordStdinOption = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from the first line of stdin.")
]


def _with_store(data_dir: Path, database_url: str | None, action: Callable[[Any], None]) -> None:
    """Run `action(store)` on the server's database (migrated to the newest schema first)."""
    from sarcoscope.store import Store

    def body() -> None:
        store = Store(data_dir, database_url)
        try:
            store.migrate()
            action(store)
        finally:
            store.close()

    run(body)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))


ROLE_HELP = (
    "viewer: reads studies, images, results and label versions; editor: also uploads, selects L3, segments, "
    "saves and imports labels, pushes to the PACS; admin: also deletes studies and reads the audit log."
)


def _no_admin_hint(store: Any) -> None:
    from sarcoscope.web.accounts import no_admin

    hint = no_admin(store)
    if hint:
        console.print(hint)


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="User name (recorded in the audit log).")],
    data_dir: DataDirOption = Path("sarcoscope-data"),
    database_url: DatabaseOption = None,
    password_stdin: PasswordStdinOption = False,
    role: Annotated[
        str | None,
        typer.Option(
            help=f"admin, editor or viewer (default: admin for the first account, then editor). {ROLE_HELP}"
        ),
    ] = None,
) -> None:
    """Create an account; the server requires logins from its next start on."""
    from sarcoscope.store import check_role
    from sarcoscope.web import accounts

    def action(store: Any) -> None:
        first = not store.has_users()
        # whoever sets up the server makes the first account: it may delete, restore and read the audit log
        given = role or ("admin" if first else "editor")
        check_role(given)  # before asking for a password
        accounts.add_user(store, name, _read_password(password_stdin), given)
        console.print(f"User [bold]{esc(name)}[/] added ({given}).")
        if first:
            console.print("This is the first account: restart `sarcoscope serve` so that it requires logins.")
        _no_admin_hint(store)

    _with_store(data_dir, database_url, action)


@users_app.command("role")
def users_role(
    name: Annotated[str, typer.Argument(help="User name.")],
    role: Annotated[str, typer.Argument(help=f"admin, editor or viewer. {ROLE_HELP}")],
    data_dir: DataDirOption = Path("sarcoscope-data"),
    database_url: DatabaseOption = None,
) -> None:
    """Give a user another role; it applies to their open sessions from their next request."""
    from sarcoscope.web import accounts

    def action(store: Any) -> None:
        before = accounts.set_role(store, name, role)
        console.print(
            f"Role of [bold]{esc(name)}[/]: {role} (was {before}); it applies from their next request on."
        )
        _no_admin_hint(store)

    _with_store(data_dir, database_url, action)


@users_app.command("passwd")
def users_passwd(
    name: Annotated[str, typer.Argument(help="User name.")],
    data_dir: DataDirOption = Path("sarcoscope-data"),
    database_url: DatabaseOption = None,
    password_stdin: PasswordStdinOption = False,
) -> None:
    """Set a new password; the user's open sessions end."""
    from sarcoscope.web import accounts

    def action(store: Any) -> None:
        if store.get_user(name) is None:  # before asking for a password
            raise SarcoscopeError(f"No user '{name}'.")
        accounts.change_password(store, name, _read_password(password_stdin))
        console.print(f"Password of [bold]{esc(name)}[/] changed; their sessions have ended.")

    _with_store(data_dir, database_url, action)


@users_app.command("remove")
def users_remove(
    name: Annotated[str, typer.Argument(help="User name.")],
    data_dir: DataDirOption = Path("sarcoscope-data"),
    database_url: DatabaseOption = None,
) -> None:
    """Delete an account and end its sessions (its name stays in the audit log and label history)."""
    from sarcoscope.web import accounts

    def action(store: Any) -> None:
        accounts.remove_user(store, name)
        console.print(f"User [bold]{esc(name)}[/] removed.")

    _with_store(data_dir, database_url, action)


@users_app.command("list")
def users_list(
    data_dir: DataDirOption = Path("sarcoscope-data"), database_url: DatabaseOption = None
) -> None:
    """List the accounts with their role, last login and failed logins since."""

    def action(store: Any) -> None:
        if not store.has_users():
            console.print("No accounts: the server runs with an access token, or open on loopback only.")
            return
        table = Table("user", "role", "created", "last login", "failed logins since")
        for user in store.list_users():
            table.add_row(
                esc(user.name),
                user.role,
                f"{user.created_at:%Y-%m-%d %H:%M}",
                f"{user.last_login_at:%Y-%m-%d %H:%M}" if user.last_login_at else "never",
                str(user.failed_logins),
            )
        console.print(table)

    _with_store(data_dir, database_url, action)


studies_app = typer.Typer(
    no_args_is_help=True,
    help="Studies deleted in the web application: kept for --keep-deleted-days of `serve`, then erased.",
)
app.add_typer(studies_app, name="studies")


@studies_app.command("deleted")
def studies_deleted(
    data_dir: DataDirOption = Path("sarcoscope-data"), database_url: DatabaseOption = None
) -> None:
    """List the deleted studies that can still be restored, most recent first (audited)."""
    from sarcoscope.store import trash
    from sarcoscope.web.accounts import cli_actor

    def action(store: Any) -> None:
        kept, unreadable = trash.shown_to(store, cli_actor())
        for study_id in unreadable:
            console.print(
                f"Deleted study {study_id}: its record cannot be read (trash/{study_id}/study.json); it is "
                "kept as it is, not listed."
            )
        if not kept:
            console.print("No deleted studies are kept." if not unreadable else "No other deleted studies.")
            return
        table = Table("id", "deleted", "by", "patient", "study date", "series", "label versions")
        for d in kept:
            table.add_row(
                d.id,
                f"{d.deleted_at:%Y-%m-%d %H:%M}",
                esc(d.deleted_by),
                esc(d.patient_id or ""),
                esc(d.study_date or ""),
                esc(d.series_description or ""),
                str(d.n_versions),
            )
        console.print(table)

    _with_store(data_dir, database_url, action)


@studies_app.command("restore")
def studies_restore(
    study_id: Annotated[str, typer.Argument(help="The id `sarcoscope studies deleted` lists.")],
    data_dir: DataDirOption = Path("sarcoscope-data"),
    database_url: DatabaseOption = None,
) -> None:
    """Put a deleted study back, with its images and every label version (the server shows it at once)."""
    from sarcoscope.store import trash
    from sarcoscope.web.accounts import cli_actor

    def action(store: Any) -> None:
        study = trash.restore(store, study_id, cli_actor())
        console.print(f"Study [bold]{study.id}[/] restored.")

    _with_store(data_dir, database_url, action)


@studies_app.command("erase")
def studies_erase(
    study_ids: Annotated[list[str], typer.Argument(help="Ids `sarcoscope studies deleted` lists.")],
    yes: Annotated[
        bool, typer.Option("--yes", help="Erase without asking (what is kept when the command runs).")
    ] = False,
    data_dir: DataDirOption = Path("sarcoscope-data"),
    database_url: DatabaseOption = None,
) -> None:
    """Erase deleted studies now, before their time is up (an erasure request): they cannot be restored. Each
    is shown as it is kept now (when, by whom, how many label versions) and erased once confirmed: that
    deletion only, not the study restored and deleted again meanwhile with a colleague's work."""
    from sarcoscope.store import trash
    from sarcoscope.web.accounts import cli_actor

    def action(store: Any) -> None:
        for study_id in study_ids:
            kept = trash.kept_deletion(store, study_id)
            shown = (
                f"Deleted study {study_id}: deleted by {kept.deleted_by} at {kept.deleted_at:%Y-%m-%d %H:%M} "
                f"UTC, with {kept.n_versions} label versions."
            )
            if not yes and not typer.confirm(f"{shown} Erase it for good?"):
                raise typer.Exit(1)
            trash.erase(store, study_id, cli_actor(), deleted_at=kept.deleted_at)
            console.print(f"Deleted study [bold]{study_id}[/] erased.")

    _with_store(data_dir, database_url, action)
