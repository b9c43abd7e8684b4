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


def check_listen_address(host: str, port: int | None) -> None:
    """Refuse a port outside 1..65535, a host name that does not resolve, or an address this
    machine cannot listen on (a test bind; any free port when ``port`` is None)."""
    import socket

    from hmfss.errors import HmfssError

    if port is not None and not 1 <= port <= 65535:
        raise HmfssError(f"--port must be from 1 to 65535, got {port}")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port or 0, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise HmfssError(f"--host {host!r} is not an address or host name: {exc}") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            where = f"{host} port {port}" if port else host
            raise HmfssError(f"cannot listen on {where}: {exc.strerror or exc}") from None


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hmfss.errors import HmfssError
    from hmfss.training.distributed import resolve_device

    check_listen_address(args.host, args.port)
    if args.checkpoint is not None and not Path(args.checkpoint).is_file():
        raise HmfssError(f"checkpoint not found: {args.checkpoint}")
    device = str(resolve_device(args.device or "auto"))
    try:
        from hmfss.app.ui import serve  # Gradio: imported only when the app starts
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] == "gradio":
            raise HmfssError('hmfss app needs Gradio: pip install "hmfss[app]"') from None
        raise
    serve(args.host, args.port, args.share, device, args.checkpoint)
    return 0
