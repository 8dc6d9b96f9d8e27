"""What the command-line tools share: an argument parser whose errors are one line, argument types that
refuse nonsense (0, negative numbers, NaN) by name, and `run`, which turns the project's own errors into
one `error: ...` line with a non-zero exit status instead of a traceback."""
import argparse
import math
import os
import sys

from .errors import ErdaError, UsageError


class Parser(argparse.ArgumentParser):
    """argparse, but a bad flag prints one line, `error: argument --lr: ...`, and exits with status 2."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _number(kind, text):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole number' if kind is int else 'number'}") from None


def int_at_least(low):
    def parse(text):
        value = _number(int, text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {low}, got {text}")
        return value
    parse.__name__ = f"integer >= {low}"
    return parse


def finite_float(low=None, low_open=True, high=None):
    """A finite float in (low, high] (low_open) or [low, high]; None leaves that side open."""
    def parse(text):
        value = _number(float, text)
        bad = not math.isfinite(value)
        if low is not None:
            bad |= value <= low if low_open else value < low
        if high is not None:
            bad |= value > high
        if bad:
            lo = "" if low is None else (f"> {low:g}" if low_open else f">= {low:g}")
            hi = "" if high is None else f"<= {high:g}"
            bounds = " and ".join(x for x in (lo, hi) if x)
            raise argparse.ArgumentTypeError(f"must be a finite number{' ' + bounds if bounds else ''}, got {text}")
        return value
    parse.__name__ = "number"
    return parse


positive_int = int_at_least(1)
nonnegative_int = int_at_least(0)
positive_float = finite_float(0.0)
nonnegative_float = finite_float(0.0, low_open=False)


def writable_folder(path, flag):
    """Creates `path` if needed and checks that files can be written in it; UsageError naming the flag."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"{flag} {path}: exists and is not a folder")
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".erda-write-test-{os.getpid()}")
        with open(probe, "w"):
            pass
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(f"{flag} {path}: cannot write there ({exc.strerror or exc})") from None
    return path


def run(main, argv=None):
    """Calls main(argv) and returns an exit status: 0 when it returns, and when it raises one of the project's
    errors, that error's status after printing `error: <message>` as one line on stderr."""
    try:
        main(argv)
        return 0
    except ErdaError as exc:
        sys.stdout.flush()
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_status
