"""The `sarcoscope` command's shared parts: the typer app, consoles, option types and the error handling
every command runs in (user errors print one clear message and exit 1; `--debug` shows the traceback)."""

import contextlib
import logging
import signal
import tempfile
import traceback
import warnings
from collections.abc import Callable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from sarcoscope.errors import SarcoscopeError, Terminated, bug_named, frames_of

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="sarcoscope: L3 body composition (muscle, SAT, VAT, IMAT) and sarcopenia assessment from CT.",
)
console = Console()
ENGINE_HELP = (
    "Segmentation engine: threshold, unet (the site's default model), unet-raw (its output without HU"
    " refinement); unet:ID for an installed model (`sarcoscope models list`), unet:MODEL_DIR for a model"
    " folder made by `sarcoscope train`."
)
err_console = Console(stderr=True)
_state = {"debug": False}
T = TypeVar("T")
#: Commands that keep their own log (the servers': "sarcoscope: …" lines at INFO, for a service's journal).
SERVER_COMMANDS = ("serve", "listen")


class LabelOrder(StrEnum):
    sarcoscope = "sarcoscope"
    totalsegmentator = "totalsegmentator"


class Convention(StrEnum):
    mid = "mid"
    inferior_endplate = "inferior-endplate"


def run(action: Callable[[], T], deidentified: bool = False) -> T:
    """Run a command body: user errors print one message and exit 1; bugs exit 70 (--debug: traceback).
    A `deidentified` run's bug is shown by its type, not its text (which may quote a header value, a name,
    a path named by UIDs), and its traceback, without the text, goes to a file the message names."""
    try:
        return action()
    except (typer.Exit, typer.Abort):
        raise
    except SarcoscopeError as exc:
        if _state["debug"]:
            traceback.print_exc()
        # a message's [brackets] are text; soft_wrap: one line, a path in it unbroken (the terminal wraps it)
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        raise typer.Exit(130) from None
    except Terminated as exc:
        err_console.print(f"[yellow]terminated[/] by {signal.Signals(exc.signum).name}")
        raise typer.Exit(128 + exc.signum) from None
    except Exception as exc:
        if _state["debug"]:
            traceback.print_exc()
        if deidentified and not _state["debug"]:
            err_console.print(
                f"[bold red]internal error:[/] {escape(bug_named(exc))}\n"
                "This is a bug in sarcoscope; its traceback, without the text, is in "
                f"{escape(str(_traceback_file(exc)))}: please report it.",
                soft_wrap=True,
            )
        else:
            err_console.print(
                f"[bold red]internal error:[/] {type(exc).__name__}: {escape(str(exc))}\n"
                "This is a bug in sarcoscope; run again with --debug for the traceback and report it.",
                soft_wrap=True,
            )
        raise typer.Exit(70) from None


def _traceback_file(exc: BaseException) -> Path:
    """A new file (readable by its owner only) holding `exc`'s traceback without any exception's text."""
    with tempfile.NamedTemporaryFile("w", prefix="sarcoscope-bug-", suffix=".txt", delete=False) as file:
        file.write(frames_of(exc) + "\n")
    return Path(file.name)


def _version(value: bool) -> None:
    if value:
        from sarcoscope import __version__

        console.print(f"sarcoscope {__version__}")
        raise typer.Exit()


class ConsoleLog(logging.Handler):
    """Log records on standard error like the command's own messages: "warning: …", one line each."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            style = "yellow" if record.levelno < logging.ERROR else "bold red"
            err_console.print(
                f"[{style}]{record.levelname.lower()}:[/] {escape(record.getMessage())}", soft_wrap=True
            )
        except Exception:
            self.handleError(record)


def _warning_to_log(message: Warning | str, *_: object, **__: object) -> None:
    """warnings.showwarning: the text alone, through logging (not the file, line and source code)."""
    logging.getLogger("py.warnings").warning("%s", message)


def console_logging() -> None:
    """sarcoscope's messages of WARNING and above, and Python warnings (pydicom's about a malformed file),
    on the console as one line each; library users and the servers route them elsewhere. Other libraries'
    log records stay theirs: pydicom's decoders log at ERROR what the command's one error then says."""
    for name in ("sarcoscope", "py.warnings"):
        logger = logging.getLogger(name)
        if not any(isinstance(h, ConsoleLog) for h in logger.handlers):
            logger.addHandler(ConsoleLog(logging.WARNING))
    warnings.showwarning = _warning_to_log


@app.callback()
def _main(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    _state["debug"] = debug
    if ctx.invoked_subcommand not in SERVER_COMMANDS:
        console_logging()


PixelSpacingOption = Annotated[
    tuple[float, float] | None,
    typer.Option(
        "--pixel-spacing",
        metavar="ROW COL",
        help="Pixel spacing in mm, for NIfTI files without a spatial transform (qform and sform codes 0), "
        "which are refused without it; the report says that it was given by you.",
    ),
]
SecretFileOption = Annotated[
    Path | None,
    typer.Option(
        "--secret-file",
        help="De-identification key (created 0600 on first use). Default: $SARCOSCOPE_DEID_SECRET_FILE, "
        "else ~/.config/sarcoscope/deidentification.key. The same key gives the same pseudonyms.",
    ),
]
#: The file holding a DICOMweb server's OAuth bearer token (pacs.dicomweb_auth.BearerToken); the token itself
#: is only ever read from a file or the environment, never from the command line (other users see argv).
DicomwebTokenFileOption = Annotated[
    Path | None,
    typer.Option(
        "--dicomweb-token-file",
        envvar="SARCOSCOPE_DICOMWEB_TOKEN_FILE",
        help="File holding the DICOMweb server's OAuth bearer token (one line; read again when the server "
        "answers 401). Or the token itself in $SARCOSCOPE_DICOMWEB_TOKEN.",
    ),
]
#: How long to wait for a PACS, for every request sarcoscope makes to it: a DICOMweb search (QIDO-RS), a
#: retrieval (WADO-RS), a push (STOW-RS or C-STORE). `--push-…`, the names the push had alone, still work.
PacsConnectTimeoutOption = Annotated[
    float,
    typer.Option(
        "--pacs-connect-timeout",
        "--push-connect-timeout",
        help="Seconds to wait for the PACS to take each connection (searching, retrieving, pushing results; "
        "then given up: a wrong host or a firewall that drops it).",
    ),
]
PacsTimeoutOption = Annotated[
    float,
    typer.Option(
        "--pacs-timeout",
        "--push-timeout",
        help="Seconds to wait for each answer of the PACS: a search's result, the next part of a retrieval, "
        "the association, each store (a PACS that stalls would otherwise hold the run; a search of a big "
        "archive may need more).",
    ),
]
KeepDatesOption = Annotated[
    bool,
    typer.Option("--keep-dates-shifted", help="Keep dates, moved by a per-patient offset (intervals kept)."),
]
KeepCharacteristicsOption = Annotated[
    bool,
    typer.Option("--keep-patient-characteristics", help="Keep sex, age, height and weight."),
]
AcceptBurnedInOption = Annotated[
    bool,
    typer.Option(
        "--accept-burned-in",
        help="Export images with burned-in annotation anyway (pixels unchanged; marked not de-identified).",
    ),
]


def deid_policy(
    deidentify: bool,
    secret_file: Path | None,
    keep_dates_shifted: bool,
    keep_patient_characteristics: bool,
    accept_burned_in: bool,
) -> Any:
    """The de-identification policy the options ask for (None without --deidentify)."""
    from sarcoscope.imaging.deidentify.policy import load_policy
    from sarcoscope.imaging.dicom_warnings import quiet_header_values

    if not deidentify:
        if secret_file or keep_dates_shifted or keep_patient_characteristics or accept_burned_in:
            raise SarcoscopeError("The de-identification options need --deidentify.")
        return None
    quiet_header_values()  # the console says no more than the outputs: no original UID in a warning
    return load_policy(
        secret_file,
        keep_dates_shifted=keep_dates_shifted,
        keep_patient_characteristics=keep_patient_characteristics,
        accept_burned_in=accept_burned_in,
    )


@contextlib.contextmanager
def scrubbed_errors(policy: Any, source: str | Path | None) -> Iterator[None]:
    """With a de-identification `policy`, a user error raised inside names nothing of the input `source`
    (its path and the names below it, UIDs, quoted descriptions: imaging.deidentify.messages.scrub_error): a
    de-identified run's console, often kept in a log, says no more than its outputs. A
    DeidentificationError names images by their de-identified UIDs already."""
    from sarcoscope.imaging.deidentify.messages import scrub_error
    from sarcoscope.imaging.deidentify.policy import DeidentificationError

    try:
        yield
    except SarcoscopeError as exc:
        if policy is not None and not isinstance(exc, DeidentificationError):
            exc.args = (scrub_error(str(exc), policy, source),)
        raise


def print_blocks(heading: str, blocks: list[tuple[str, list[str]]]) -> None:
    """Print `heading`, then per block its head in bold on a line of its own (never wrapped: an id or UID
    that is copied into another command) and its lines wrapped under it. Listings of sentences (citations,
    validations) read at any terminal width, where a table's columns shrink to a few letters at 80."""
    from rich.padding import Padding

    console.print(escape(heading))
    for head, lines in blocks:
        console.print(f"\n[bold]{escape(head)}[/]", soft_wrap=True)
        for line in lines:
            console.print(Padding(escape(line), (0, 0, 0, 4), expand=False))


def fmt_indices(indices: list[int]) -> str:
    return str(indices[0]) if len(indices) == 1 else f"{indices[0]}–{indices[-1]} ({len(indices)} slices)"


def csv_list(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None
