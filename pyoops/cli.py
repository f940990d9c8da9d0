"""The ``pyoops`` command: ``pyoops APP CONFIG.yaml`` and ``pyoops plugins``.

Errors caused by the user (configuration, input files) print one line and
exit with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import traceback
from collections.abc import Iterator, Sequence
from typing import Any

from pyoops.util.errors import ConfigError, PluginError, PyoopsError
from pyoops.util.logging import configure

__all__ = ["main"]

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 1


def _parser(app_names: Sequence[str], summaries: dict[str, str]) -> argparse.ArgumentParser:
    from pyoops import __version__

    parser = argparse.ArgumentParser(
        prog="pyoops", description="Run a pyoops data-assimilation application on a YAML configuration.")
    parser.add_argument("--version", action="version", version=f"pyoops {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    plugins = sub.add_parser("plugins", help="list every registered name by kind")
    plugins.add_argument("--debug", action="store_true", help="show tracebacks")
    for name in app_names:
        p = sub.add_parser(name, help=summaries.get(name, ""))
        p.add_argument("config", nargs="?", help="YAML configuration file")
        p.add_argument("--validate-only", action="store_true",
                       help="validate the configuration (including plugin sections) and exit")
        p.add_argument("--output-json-schema", metavar="FILE",
                       help="write the JSON schema of this application's configuration to FILE and exit")
        p.add_argument("--debug", action="store_true", help="show tracebacks of errors")
        p.add_argument("--quiet", action="store_true", help="only warnings and errors")
    return parser


def _print_plugins(registry: Any) -> None:
    print("Installed plugins:")
    for name, dist in sorted(registry.distributions.items()):
        print(f"  {name:<20} {dist}")
    for kind, entries in registry.describe().items():
        print(f"{kind}:")
        if not entries:
            print("  (none)")
        for name, plugin in entries:
            print(f"  {name:<28} [{plugin}]")


def _print_summary(summary: dict[str, Any]) -> None:
    for key, value in summary.items():
        if isinstance(value, (int, float, str)):
            print(f"{key}: {value:.12g}" if isinstance(value, float) else f"{key}: {value}")
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            for item in value:
                print(f"{key}: {item}")
        elif isinstance(value, dict):
            for sub, stats in value.items():
                if isinstance(stats, dict):
                    text = ", ".join(f"{k} {v:.6g}" if isinstance(v, float) else f"{k} {v}" for k, v in stats.items())
                    print(f"{key} {sub}: {text}")


def _os_error_message(exc: OSError) -> str:
    """``FILE: cannot be written or read (REASON)``, naming the file the user chose.

    For a rename (atomic output) ``filename2`` is the target the user named,
    ``filename`` the temporary file next to it.
    """
    name = exc.filename2 if exc.filename2 is not None else exc.filename
    reason = exc.strerror or str(exc)
    if name is None:
        return f"file system error: {reason}"
    return f"{name}: cannot be written or read ({reason})"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    document = None
    try:
        from pyoops.registry import get_registry

        registry = get_registry()
        apps = registry.application
        # Names and summaries are known without importing the applications (lazy registration):
        # --help, APP --help and plugins import neither the makers nor numpy.
        summaries = {e.name: e.summary for e in apps.entries()}
        args = _parser(apps.names(), summaries).parse_args(argv)
        configure(logging.WARNING if getattr(args, "quiet", False) else logging.INFO)
        if args.command == "plugins":
            _print_plugins(registry)
            return 0
        from pyoops.config.yaml_io import load_config
        from pyoops.util.atomic import atomic_output

        application = apps.get(args.command)(registry)
        if args.output_json_schema:
            plugin = None
            if args.config:
                document = load_config(args.config)
                name = document.data.get("model plugin")
                plugin = registry.model_plugin(name) if name is not None else None
            with atomic_output(args.output_json_schema) as tmp:
                tmp.write_text(json.dumps(application.json_schema(plugin), indent=2) + "\n")
            print(f"JSON schema of '{args.command}' written to {args.output_json_schema}")
            return 0
        if not args.config:
            raise ConfigError(f"'pyoops {args.command}' needs a YAML configuration file")
        document = load_config(args.config)
        params = application.validate(document)
        if args.validate_only:
            print(f"{args.config}: valid {args.command} configuration")
            return 0
        from pyoops.util.allocator import tune_allocator

        tune_allocator()   # glibc keeps freed array memory for reuse instead of mapping it afresh
        with _terminate_as_interrupt():
            summary = application.execute(params)
        _print_summary(summary)
        return 0
    except PyoopsError as exc:
        if debug:
            traceback.print_exc()
        where = ""
        if isinstance(exc, ConfigError) and document is not None and exc.path:
            line = document.line_of(exc.path)
            if line and document.filename:
                where = f" ({document.filename}:{line})"
        print(_one_line(f"pyoops: error: {exc}{where}{_outputs(exc)}"), file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as exc:
        # The system refused a file operation (an output path taken by a directory, no
        # permission, disk full): the user's environment, not a bug in pyoops.
        if debug:
            traceback.print_exc()
        print(_one_line(f"pyoops: error: {_os_error_message(exc)}{_outputs(exc)}"), file=sys.stderr)
        return EXIT_USER_ERROR
    except MemoryError as exc:
        if debug:
            traceback.print_exc()
        print(_one_line(f"pyoops: error: out of memory ({exc or 'an allocation failed'}); reduce the grid, "
                        f"the ensemble or the number of observations{_outputs(exc)}"), file=sys.stderr)
        return EXIT_USER_ERROR
    except Terminated as exc:
        print(f"pyoops: terminated (SIGTERM){_outputs(exc)}", file=sys.stderr)
        return 128 + 15
    except KeyboardInterrupt as exc:
        print(f"pyoops: interrupted{_outputs(exc)}", file=sys.stderr)
        return 130
    except PluginError as exc:  # a plugin defines a maker wrongly: not the user's configuration
        if debug:
            traceback.print_exc()
        print(_one_line(f"pyoops: plugin error: {_plugin_label(exc.plugin)}: {exc}{_outputs(exc)} (a mistake in "
                        "the plugin, not in the configuration; rerun with --debug for the traceback)"),
              file=sys.stderr)
        return EXIT_INTERNAL_ERROR
    except RecursionError as exc:
        if debug:
            traceback.print_exc()
        print(_one_line(f"pyoops: internal error: {_culprit(exc)}: RecursionError: {exc}{_outputs(exc)} "
                        "(rerun with --debug for the traceback)"), file=sys.stderr)
        return EXIT_INTERNAL_ERROR
    except Exception as exc:  # a bug: keep it visible but readable
        if debug:
            traceback.print_exc()
        print(_one_line(f"pyoops: internal error in {_culprit(exc)}: {type(exc).__name__}: {exc}{_outputs(exc)} "
                        "(a bug; rerun with --debug for the traceback)"), file=sys.stderr)
        return EXIT_INTERNAL_ERROR


class Terminated(KeyboardInterrupt):
    """SIGTERM received while an application ran (a batch system's time limit, ``kill``)."""


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """While the application runs, SIGTERM raises :class:`Terminated`, handled as Ctrl-C is: the run's
    temporaries are removed, a cycling run writes the checkpoint of its last completed cycle, and the
    process exits with 143.  Only in the main thread (where Python delivers signals); the previous handler
    is restored afterwards."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM"):
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise Terminated("SIGTERM")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _one_line(text: str, limit: int = 2000) -> str:
    """``text`` on one line (newlines folded), at most ``limit`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _outputs(exc: BaseException) -> str:
    """``; no output was written`` (or what was kept) for an error raised by a run."""
    outputs = getattr(exc, "outputs", None)
    return f"; {outputs}" if outputs else ""


def _plugin_label(plugin: str) -> str:
    """``plugin 'qg' (pyoops-qg 0.1.0)``: a plugin and the distribution that installed it (if any)."""
    try:
        from pyoops.registry import get_registry

        dist = get_registry().distributions.get(plugin)
    except Exception:  # naming the distribution must never hide the error itself
        dist = None
    return f"plugin '{plugin or '?'}'" + (f" ({dist})" if dist else "")


def _culprit(exc: BaseException) -> str:
    """``plugin 'qg' (pyoops-qg 0.1.0), model 'QG' (pyoops_qg.model.QgModel.step)``: where an exception arose.

    The innermost frame of the traceback that belongs to a registered third-party plugin's
    package (else to pyoops itself, the ``generic`` plugin) names the plugin and its
    distribution; the innermost ``self`` up to there that is one of the registered makers
    (or a subclass) names the maker.
    """
    try:
        from pyoops.registry import get_registry

        registry = get_registry()
        packages: dict[str, str] = {}
        makers: list[tuple[type, str, str, str]] = []
        for kind, factory in registry.factories.items():
            for entry in factory.entries():
                packages.setdefault(entry.module.split(".")[0], entry.plugin or "generic")
                maker = entry.loaded_maker()  # a maker never imported cannot be in the traceback
                if isinstance(maker, type):
                    makers.append((maker, kind, entry.name, entry.plugin or "generic"))
        for model in registry.model_plugins.values():
            packages.setdefault(model.geometry_module.split(".")[0], model.plugin or model.name)
        packages["pyoops"] = "generic"
        frames = [f for f, _ in traceback.walk_tb(exc.__traceback__)]
        owners = [packages.get(f.f_globals.get("__name__", "").split(".")[0]) for f in frames]
        # The innermost frame of a third-party plugin names the culprit (a plugin's KeyError often
        # surfaces inside pyoops code it called); pyoops's own frames only when no plugin is involved.
        third_party = [i for i, p in enumerate(owners) if p not in (None, "generic")]
        ours = [i for i, p in enumerate(owners) if p is not None]
        for index in (third_party or ours)[-1:]:
            frame, plugin = frames[index], owners[index]
            module = frame.f_globals.get("__name__", "")
            function = frame.f_code.co_name
            owner = frame.f_locals.get("self")
            where = f"{module}.{type(owner).__name__}.{function}" if owner is not None else f"{module}.{function}"
            maker = ""
            for frame2 in reversed(frames[: frames.index(frame) + 1]):
                candidate = frame2.f_locals.get("self")
                if candidate is None:
                    continue
                for cls, kind, name, _ in makers:
                    if isinstance(candidate, cls):
                        maker = f", {kind} '{name}'"
                        break
                if maker:
                    break
            return f"{_plugin_label(plugin)}{maker} ({where})"
    except Exception:  # naming the culprit must never hide the error itself
        pass
    return "pyoops"


if __name__ == "__main__":
    sys.exit(main())
