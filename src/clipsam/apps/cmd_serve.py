"""``clipsam serve``: the web page and JSON API (loopback only unless told otherwise)."""

from __future__ import annotations

import argparse
import sys

from clipsam.apps.options import (
    add_device,
    add_runtime,
    add_segmenter,
    add_text_model,
    add_threads,
    add_weights_dir,
    port_number,
    positive_float,
    positive_int,
)
from clipsam.config import ModelConfig, RunConfig


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "serve", help="web page and HTTP API for segmentation",
        description="Serve the clipsam web page at / and the JSON API (POST /segment, "
                    "GET /health). Models load on the first request and stay loaded.")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default loopback; 0.0.0.0 exposes it)")
    parser.add_argument("--port", type=port_number, default=7860,
                        help="port to listen on (default %(default)s)")
    add_segmenter(parser)
    add_text_model(parser)
    add_runtime(parser)
    add_device(parser)
    add_threads(parser)
    add_weights_dir(parser)
    parser.add_argument("--max-upload-mb", type=positive_float, default=64.0, metavar="MB",
                        help="largest upload accepted, in MiB (default %(default)s)")
    parser.add_argument("--max-side", type=positive_int, default=4096, metavar="PIXELS",
                        help="largest image side in pixels (default %(default)s)")
    parser.add_argument("--request-seconds", type=positive_float, default=300.0,
                        metavar="SECONDS", help="time limit for one segmentation request "
                                                "(default %(default)s)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from clipsam.apps.server import SegmenterPool, ServerLimits, create_app
    from clipsam.pipelines.provenance import run_identity

    limits = ServerLimits(max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
                          max_side=args.max_side, request_seconds=args.request_seconds)
    models = ModelConfig(segmenter=args.segmenter, runtime=args.runtime, device=args.device,
                         threads=args.threads,
                         text_model=args.text_model, weights_dir=args.weights_dir)
    run_identity(RunConfig(models=models))  # a missing device or model file: refuse at startup
    app = create_app(SegmenterPool(models), limits)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {args.host}: anyone who can reach this address can use it",
              file=sys.stderr)
    print(f"clipsam: open http://{args.host}:{args.port}/", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
