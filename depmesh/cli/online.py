"""`depmesh serve`: the mesh's Production release online (depmesh.online)."""

from __future__ import annotations

import ipaddress
import os
import shutil
import tempfile

import click

from depmesh.cli.app import main
from depmesh.cli.common import CATALOG_OPTION, HOME_OPTION, catalog_path, existing_home, load_mesh


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@main.command("serve")
@CATALOG_OPTION
@HOME_OPTION
@click.option("--release", "release_folder", type=click.Path(file_okay=False, exists=True), default=None,
              help="Serve this bundled release folder (release.json and artifacts/, as `depmesh deps container` "
                   "writes it) instead of following a registry.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Without $DEPMESH_SERVE_TOKEN only loopback is the default.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              help="Port (0: any free port; the address is printed).")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True, help="Server processes.")
@click.option("--max-rows", type=click.IntRange(1, 1_000_000), default=1000, show_default=True,
              help="Rows per request at most.")
@click.option("--max-body-bytes", type=click.IntRange(1024, 1 << 30), default=1 << 20, show_default=True,
              help="Request body size at most.")
@click.option("--poll", "poll_s", type=click.FloatRange(0.05, 1.0), default=0.25, show_default=True,
              help="Seconds between looks at the registry (a promotion or rollback is served within this).")
def serve(catalog: str | None, home: str | None, release_folder: str | None, host: str, port: int, workers: int,
          max_rows: int, max_body_bytes: int, poll_s: float) -> None:
    """Serve the mesh's Production release online: POST /v1/models/<node>:predict, GET /v1/models/<node>,
    GET /v1/release, /healthz, /readyz, /metrics. Follows the registry: a promotion, a rollback or a rollout
    step swaps the whole verified set in without dropping a request."""
    import uvicorn

    from depmesh.online.app import CONFIG_ENV, TOKEN_ENV, ServeConfig
    from depmesh.online.metrics import MULTIPROCESS_ENV

    if release_folder and (catalog or home):
        raise click.UsageError("--release serves a bundled release folder; it takes no --catalog or --home")
    if release_folder:
        from pathlib import Path

        from depmesh.online.served import SetRefused, folder_loader, from_folder

        try:  # refused here, before any port is opened: a container with a bad artifact exits, it does not idle
            found = from_folder(Path(release_folder), folder_loader())
        except (SetRefused, OSError, ValueError, KeyError) as exc:
            raise click.ClickException(f"release not loaded: {type(exc).__name__}: {exc}") from None
        click.echo(f"depmesh serve: release {found.release_id} of mesh {found.mesh}: {len(found.models)} models "
                   "loaded and verified: " + ", ".join(f"{n}@{m.version}" for n, m in sorted(found.models.items())),
                   err=True)
        config = ServeConfig(release=os.path.abspath(release_folder), max_body_bytes=max_body_bytes,
                             max_rows=max_rows, poll_s=poll_s)
        what = f"the bundled release in {release_folder}"
    else:
        mesh = load_mesh(catalog)
        path = existing_home(home)
        config = ServeConfig(catalog=str(catalog_path(catalog).resolve()), home=str(path), max_body_bytes=max_body_bytes,
                             max_rows=max_rows, poll_s=poll_s)
        what = f"mesh {mesh.name}'s Production release from the registry of {path} (followed every {poll_s:g} s)"
    token = bool(os.environ.get(TOKEN_ENV))
    os.environ[CONFIG_ENV] = config.to_env()
    metrics_dir = None
    if workers > 1:  # the workers share their metrics through files
        metrics_dir = tempfile.mkdtemp(prefix="depmesh-serve-metrics-")
        os.environ[MULTIPROCESS_ENV] = metrics_dir
    server_config = uvicorn.Config("depmesh.online.app:app_from_env", factory=True, host=host, port=port,
                                   workers=workers, log_level="warning", access_log=False)
    sock = server_config.bind_socket()
    bound = sock.getsockname()
    click.echo(f"depmesh serve: listening on http://{bound[0]}:{bound[1]} with {workers} worker(s), serving {what}")
    if token:
        click.echo(f"depmesh serve: every route but /healthz and /readyz needs Authorization: Bearer ${TOKEN_ENV}")
    elif _loopback(host):
        click.echo(f"depmesh serve: no ${TOKEN_ENV} set, so only this machine can reach it (loopback); set the "
                   "token to serve others with --host")
    else:
        click.echo(f"depmesh serve: WARNING: no ${TOKEN_ENV} set and listening on {host}: anyone who can reach "
                   "this address can call every route")
    try:
        if workers > 1:
            from uvicorn.supervisors import Multiprocess

            Multiprocess(server_config, sockets=[sock]).run()
        else:
            uvicorn.Server(server_config).run(sockets=[sock])
    finally:
        sock.close()
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
