"""`attnserve` command line: parses arguments and hands them to the subcommand's entry point.

The server's own subcommands (serve, client) are defined here; the tools' subcommands (export
and demo from the exporter, bench from the benchmark tool) are registered by those packages
under the `attnserve.commands` entry-point group (pyproject.toml), so the serving package never
imports them. Heavy imports (torch for export, grpc for serve) happen inside each entry point.
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import entry_points

COMMANDS_GROUP = "attnserve.commands"


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the gRPC server")
    p.add_argument("--models", default=None, help="directory of model dirs (env ATTNSERVE_MODELS)")
    p.add_argument("--poll-seconds", type=float, default=None, help="rescan --models (0 = off)")
    p.add_argument("--keep-versions", type=int, default=None, help="versions served per model")
    p.add_argument("--host", default=None, help="bind address (env ATTNSERVE_HOST)")
    p.add_argument("--port", type=int, default=None, help="gRPC port (env ATTNSERVE_PORT)")
    p.add_argument("--metrics-port", type=int, default=None, help="env ATTNSERVE_METRICS_PORT")
    p.add_argument("--metrics-host", default=None, help="address /metrics binds (default: --host)")
    p.add_argument(
        "--metrics-tls", action="store_true", default=None, help="/metrics over TLS (--tls-cert)"
    )
    p.add_argument(
        "--metrics-auth",
        action="store_true",
        default=None,
        help="/metrics needs a bearer token of --auth-tokens-file",
    )
    p.add_argument("--http-port", type=int, default=None, help="HTTP/REST port (default: off)")
    p.add_argument("--otlp-endpoint", default=None, help="send traces to this OTLP/gRPC collector")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="env ATTNSERVE_DEVICE")
    p.add_argument(
        "--intra-op-threads",
        type=int,
        default=None,
        help="0 (default) = the CPU quota rounded up where one applies, else the --pin-cores "
        "split or one per core; setting it turns --pin-cores auto off",
    )
    p.add_argument(
        "--encoder-threads",
        type=int,
        default=None,
        help="default: the encoder's cores of the --pin-cores split, else --intra-op-threads",
    )
    p.add_argument(
        "--encoder-nice", type=int, default=None, help="lower the beside encoder's priority"
    )
    p.add_argument(
        "--spinning",
        choices=["auto", "on", "off"],
        default=None,
        help="ONNX Runtime's pool threads busy-wait (auto: off beside the steps)",
    )
    p.add_argument(
        "--pin-cores",
        choices=["auto", "on", "off"],
        default=None,
        help="the beside encoder and the decoder on cores of their own (auto: see docs/api.md)",
    )
    p.add_argument("--max-batch-rows", type=int, default=None)
    p.add_argument("--admission", choices=["continuous", "static"], default=None)
    p.add_argument("--max-encoder-tokens-per-step", type=int, default=None, help="0 = no limit")
    p.add_argument(
        "--encoder-beside-decode",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="encode newcomers on a thread beside the decode steps",
    )
    p.add_argument(
        "--device-argmax",
        choices=["auto", "on", "off"],
        default=None,
        help="greedy token choice next to the logits (auto: on for cuda)",
    )
    p.add_argument("--max-queue", type=int, default=None)
    p.add_argument("--max-num-beams", type=int, default=None)
    p.add_argument("--max-new-tokens-cap", type=int, default=None)
    p.add_argument("--kv-budget-mb", type=int, default=None)
    p.add_argument("--max-image-pixels", type=int, default=None)
    p.add_argument("--max-image-mb", type=int, default=None)
    p.add_argument(
        "--max-input-bytes", type=int, default=None, help="largest text, refused before any work"
    )
    p.add_argument(
        "--max-batch-elements", type=int, default=None, help="most inputs in one KServe call"
    )
    p.add_argument(
        "--truncate",
        type=int,
        default=None,
        help="default GenerationParams.truncate: 0 refuses too-long texts, N keeps N tokens",
    )
    p.add_argument(
        "--prep-workers", type=int, default=None, help="threads tokenizing / decoding images"
    )
    p.add_argument("--drain-seconds", type=float, default=None)
    p.add_argument(
        "--stall-seconds",
        type=float,
        default=None,
        help="a step this long (or a dead step thread) turns health NOT_SERVING (0 = off)",
    )
    _add_serve_security(p)
    p.set_defaults(run=_run_serve)


def _add_serve_security(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-message-mb", type=int, default=None, help="largest request message")
    p.add_argument("--tls-cert", default=None, help="PEM certificate chain: the port speaks TLS")
    p.add_argument("--tls-key", default=None, help="PEM private key of --tls-cert")
    p.add_argument("--tls-client-ca", default=None, help="PEM CA: require client certs (mTLS)")
    p.add_argument("--auth-tokens-file", default=None, help="accepted bearer tokens, one a line")
    open_help = "callable without a token (default: yes)"
    p.add_argument(
        "--auth-open-health", action=argparse.BooleanOptionalAction, default=None, help=open_help
    )
    p.add_argument(
        "--auth-open-reflection",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=open_help,
    )
    p.add_argument(
        "--log-requests", action="store_true", default=None, help="log request contents (debug)"
    )


def _add_client(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("client", help="call a running server")
    p.add_argument("--target", default="127.0.0.1:50051")
    p.add_argument("--ca-cert", default=None, help="PEM CA to verify the server by: use TLS")
    p.add_argument("--client-cert", default=None, help="PEM client certificate (mutual TLS)")
    p.add_argument("--client-key", default=None, help="PEM private key of --client-cert")
    p.add_argument("--token", default=None, help="bearer token (env ATTNSERVE_TOKEN)")
    client_sub = p.add_subparsers(dest="client_command", required=True)
    for name in ("summarize", "caption"):
        c = client_sub.add_parser(name)
        if name == "summarize":
            c.add_argument("--text", required=True)
        else:
            c.add_argument("--image", required=True, help="image file")
            c.add_argument("--prompt", default="", help="text the caption continues from")
        c.add_argument("--model", default="")
        c.add_argument("--stream", action="store_true")
        c.add_argument("--max-new-tokens", type=int, default=None)
        c.add_argument("--num-beams", type=int, default=None)
        c.add_argument("--do-sample", action="store_true", default=None)
        c.add_argument("--temperature", type=float, default=None)
        c.add_argument("--top-k", type=int, default=None)
        c.add_argument("--top-p", type=float, default=None)
        c.add_argument("--seed", type=int, default=None)
        c.add_argument(
            "--explain",
            action="store_true",
            default=None,
            help="print where each generated token's cross-attention went",
        )
        if name == "summarize":
            c.add_argument("--explain-top-k", type=int, default=None, help="source words per token")
        else:
            c.add_argument("--heatmap", default=None, help="with --explain: write a heatmap PNG")
    client_sub.add_parser("models", help="list served models")
    p.set_defaults(run=_run_client)


def _run_serve(args: argparse.Namespace) -> int:
    from service.api.server import run_serve

    return run_serve(args)


def _run_client(args: argparse.Namespace) -> int:
    from service.client import run_client

    return run_client(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attnserve", description="serve, call, export and benchmark encoder-decoder models"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_serve(sub)
    _add_client(sub)
    for command in sorted(entry_points(group=COMMANDS_GROUP), key=lambda entry: entry.name):
        try:
            add_command = command.load()
        except ModuleNotFoundError as exc:  # a tool left out of this install (runtime image)
            if exc.name != command.module.split(".")[0]:
                raise
            continue
        add_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
