"""A small synchronous Python client for attnserve, and `attnserve client ...` built on it.

with AttnserveClient("127.0.0.1:50051") as client:
    print(client.summarize("A long text ...", num_beams=4).text)
    for chunk in client.caption_stream(Path("cat.jpg").read_bytes()):
        print(chunk.text_delta, end="", flush=True)
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc

from service._pb.attnserve.v1 import attnserve_pb2 as pb
from service._pb.attnserve.v1 import attnserve_pb2_grpc as pb_grpc

TOKEN_ENV = "ATTNSERVE_TOKEN"
PARAM_FLAGS = (
    "max_new_tokens",
    "num_beams",
    "do_sample",
    "temperature",
    "top_k",
    "top_p",
    "seed",
    "explain",
    "explain_top_k",
)


def _params(params: dict[str, Any]) -> pb.GenerationParams:
    """GenerationParams from keyword arguments; None means unset (the model's default)."""
    return pb.GenerationParams(**{k: v for k, v in params.items() if v is not None})


def _channel(
    target: str,
    root_certificates: bytes | None,
    private_key: bytes | None,
    certificate_chain: bytes | None,
) -> grpc.Channel:
    """TLS when a CA or a client certificate is given, plaintext otherwise."""
    if (private_key is None) != (certificate_chain is None):
        raise ValueError("a client certificate and its private key go together")
    if root_certificates is None and certificate_chain is None:
        return grpc.insecure_channel(target)
    credentials = grpc.ssl_channel_credentials(root_certificates, private_key, certificate_chain)
    return grpc.secure_channel(target, credentials)


class AttnserveClient:
    """Calls attnserve.v1.AttentionService over one channel. Generation keyword arguments are
    GenerationParams' fields (max_new_tokens, num_beams, do_sample, temperature, top_k, top_p,
    seed, ...); `timeout` is the deadline in seconds; `version` picks a model version (default:
    the serving one). Failures raise grpc.RpcError.

    TLS: `root_certificates` is the PEM CA the server's certificate is checked against (None
    with a client certificate: the system's CAs); `private_key` and `certificate_chain` are the
    client's own for mutual TLS. `token` is sent as `authorization: Bearer <token>`."""

    def __init__(
        self,
        target: str,
        channel: grpc.Channel | None = None,
        *,
        root_certificates: bytes | None = None,
        private_key: bytes | None = None,
        certificate_chain: bytes | None = None,
        token: str | None = None,
    ) -> None:
        self.channel = channel or _channel(
            target, root_certificates, private_key, certificate_chain
        )
        self.stub = pb_grpc.AttentionServiceStub(self.channel)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None

    def summarize(
        self,
        text: str,
        model: str = "",
        timeout: float | None = None,
        version: str = "",
        **params: Any,
    ) -> pb.GenerateResponse:
        request = pb.SummarizeRequest(
            model=model, version=version, text=text, params=_params(params)
        )
        return self.stub.Summarize(request, timeout=timeout, metadata=self._metadata)

    def summarize_stream(
        self,
        text: str,
        model: str = "",
        timeout: float | None = None,
        version: str = "",
        **params: Any,
    ) -> Iterator[pb.GenerateChunk]:
        """Chunks as the server generates them; the last one carries finish_reason."""
        request = pb.SummarizeRequest(
            model=model, version=version, text=text, params=_params(params)
        )
        return self.stub.SummarizeStream(request, timeout=timeout, metadata=self._metadata)

    def caption(
        self,
        image: bytes,
        model: str = "",
        timeout: float | None = None,
        version: str = "",
        prompt: str = "",
        **params: Any,
    ) -> pb.GenerateResponse:
        request = pb.CaptionRequest(
            model=model, version=version, image=image, prompt=prompt, params=_params(params)
        )
        return self.stub.Caption(request, timeout=timeout, metadata=self._metadata)

    def caption_stream(
        self,
        image: bytes,
        model: str = "",
        timeout: float | None = None,
        version: str = "",
        prompt: str = "",
        **params: Any,
    ) -> Iterator[pb.GenerateChunk]:
        request = pb.CaptionRequest(
            model=model, version=version, image=image, prompt=prompt, params=_params(params)
        )
        return self.stub.CaptionStream(request, timeout=timeout, metadata=self._metadata)

    def list_models(self, task: str = "", timeout: float | None = None) -> list[pb.ModelInfo]:
        listing = self.stub.ListModels(
            pb.ListModelsRequest(task=task), timeout=timeout, metadata=self._metadata
        )
        return list(listing.models)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> AttnserveClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _print_models(models: list[pb.ModelInfo]) -> None:
    columns = ("name", "version", "task", "architecture", "dtype", "provider", "max_input_tokens")
    rows = [(*columns, "default")]
    rows += [
        (*(str(getattr(m, c)) for c in columns), "yes" if m.is_default else "") for m in models
    ]
    widths = [max(len(cell) for cell in column) for column in zip(*rows, strict=True)]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def _generate(client: AttnserveClient, args: argparse.Namespace) -> None:
    heatmap = getattr(args, "heatmap", None)
    if heatmap and not args.explain:
        raise ValueError("--heatmap needs --explain")
    params = {name: getattr(args, name, None) for name in PARAM_FLAGS}
    if args.client_command == "summarize":
        payload, unary, stream = args.text, client.summarize, client.summarize_stream
    else:
        params["prompt"] = args.prompt
        payload, unary, stream = (
            Path(args.image).read_bytes(),
            client.caption,
            client.caption_stream,
        )
    if args.stream:
        attribution = pb.Attribution()
        for chunk in stream(payload, model=args.model, **params):
            print(chunk.text_delta, end="", flush=True)
            attribution.MergeFrom(chunk.attribution)  # repeated tokens append, header stays
        print()
    else:
        response = unary(payload, model=args.model, **params)
        print(response.text)
        attribution = response.attribution
    if args.explain:
        _show_attribution(payload, attribution, heatmap)


def _show_attribution(payload: str | bytes, attribution: pb.Attribution, heatmap: str | None):
    from service.client import explain_view  # Pillow and numpy: only loaded when asked for

    print(f"\nattention ({attribution.reduction}):")
    if isinstance(payload, str):
        lines = explain_view.text_explanation(attribution)
    else:
        lines = explain_view.image_explanation(attribution)
    print("\n".join(lines))
    if heatmap:
        assert isinstance(payload, bytes)
        explain_view.write_heatmap(payload, attribution, Path(heatmap))
        print(f"heatmap: {heatmap}")


def _connect(args: argparse.Namespace) -> AttnserveClient:
    """A client with the TLS files and token the flags (or ATTNSERVE_TOKEN) name."""

    def read(path: str | None) -> bytes | None:
        return None if path is None else Path(path).read_bytes()

    return AttnserveClient(
        args.target,
        root_certificates=read(args.ca_cert),
        private_key=read(args.client_key),
        certificate_chain=read(args.client_cert),
        token=args.token or os.environ.get(TOKEN_ENV) or None,
    )


def run_client(args: argparse.Namespace) -> int:
    """`attnserve client summarize|caption|models`: 0 on success, 1 on an RPC error,
    2 if a file (image, certificate, key) cannot be read or the flags do not fit together."""
    try:
        with _connect(args) as client:
            if args.client_command == "models":
                _print_models(client.list_models())
            else:
                _generate(client, args)
    except OSError as exc:
        print(f"error: cannot read {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except grpc.RpcError as exc:
        print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    return 0
