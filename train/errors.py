"""One-line user errors and the CLI wrapper that turns them into exit status 2."""
import contextlib
import functools
import signal
import sys
import threading


class UserError(Exception):
    """Bad input from the user: printed as one line, exit status 2, no traceback."""


class Rejected(UserError):
    """The configuration breaks a constraint (the parameter budget, an impossible head): refused before
    training, and not counted against a search's trial budget."""


class DataError(UserError, ValueError):
    """A data file that cannot be used; the message names file, row and column."""


def check_training_code(what: str, theirs, ours: int, remedy: str) -> None:
    """One line where results of two training codes (train.trial.TRAINING_CODE) would meet."""
    if int(theirs) != int(ours):
        raise UserError(f"{what} was trained by training code {theirs}, this is {ours} (train.trial.TRAINING_CODE): "
                        f"{remedy}")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises KeyboardInterrupt, so `kill PID` (or a scheduler's stop) takes the same
    clean path: the trial and the search are closed as killed in both stores, finished work is kept."""


def how_stopped(exc: KeyboardInterrupt) -> tuple[str, int]:
    """The word and exit status for an interrupt: SIGTERM's or Ctrl-C's."""
    return ("terminated", 143) if isinstance(exc, Terminated) else ("interrupted", 130)


def _terminated(signum, frame):
    raise Terminated()


@contextlib.contextmanager
def stop_cleanly_on_sigterm():
    """For the command's duration, from the main thread, and only over the default action: a parent that chose
    otherwise is obeyed. (A job started with `&` from a script has SIGINT ignored, so Ctrl-C and `kill -INT` do
    nothing to it; SIGTERM still reaches it.)"""
    mine = threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    if mine:
        signal.signal(signal.SIGTERM, _terminated)
    try:
        yield
    finally:
        if mine and signal.getsignal(signal.SIGTERM) is _terminated:  # not over one a library set meanwhile
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def cli(main):
    """Decorate a CLI entry point so user errors print one line and exit 2, and SIGTERM stops it as Ctrl-C does."""
    @functools.wraps(main)
    def wrapper(argv=None):
        try:
            with stop_cleanly_on_sigterm():
                return main(argv)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt as exc:
            word, status = how_stopped(exc)
            print(word, file=sys.stderr)
            raise SystemExit(status) from None
        except Exception as exc:
            # A library may wrap our one-line error in its own (Optuna does, when a database stays away).
            cause = exc.__cause__ or exc.__context__
            while cause is not None and not isinstance(cause, UserError):
                cause = cause.__cause__ or cause.__context__
            if cause is None:
                raise
            print(f"error: {cause}", file=sys.stderr)
            raise SystemExit(2) from None
    return wrapper


def first_line(exc) -> str:
    """A library's exception as one line for a one-line error."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
