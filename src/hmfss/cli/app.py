"""``hmfss app``: the web app (needs the ``hmfss[app]`` extra, i.e. Gradio)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "app",
        help="web app: annotate a few examples per class, segment a whole set of photos",
        description="Start the hmfss web app (Gradio). Listens on 127.0.0.1 unless --host says otherwise.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=None, help="port (default: Gradio's, 7860 or the next free one)")
    p.add_argument("--share", action="store_true", help="also open a public Gradio share link (off by default)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available, else cpu)")
    p.add_argument("--checkpoint", default=None, help="model to load at start (default: hmfss demo's, if present)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hmfss.errors import HmfssError
    from hmfss.training.distributed import resolve_device

    try:
        from hmfss.app.ui import serve  # Gradio: imported only when the app starts
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] == "gradio":
            raise HmfssError('hmfss app needs Gradio: pip install "hmfss[app]"') from None
        raise
    serve(args.host, args.port, args.share, str(resolve_device(args.device or "auto")), args.checkpoint)
    return 0
