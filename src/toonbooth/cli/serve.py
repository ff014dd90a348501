"""`toonbooth serve` (the API + web UI server, uvicorn) and `toonbooth users ...` (API tokens).

`register(app)` adds them to the main typer app (`cli/main.py`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ..core.errors import ToonboothError
from .common import fail, make_app, settings


def register(app: typer.Typer) -> None:
    """Add `serve` and `users ...` to the main app."""
    users_app = make_app(
        help="API users and their tokens (stored hashed in the data folder).", no_args_is_help=True
    )
    app.add_typer(users_app, name="users")

    @app.command()
    def serve(
        host: Annotated[
            str, typer.Option(help="Address to bind. Anything but loopback needs users (tokens).")
        ] = "127.0.0.1",
        port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 7860,
        models_dir: Annotated[
            Path | None,
            typer.Option("--models-dir", help="Models folder (A1111 layout), e.g. from `models make-tiny`."),
        ] = None,
        allow_origin: Annotated[
            list[str] | None,
            typer.Option(help="Another browser origin allowed to call the API (CORS), repeatable."),
        ] = None,
        ui: Annotated[bool, typer.Option("--ui/--no-ui", help="Serve the web UI at /ui.")] = True,
        log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    ) -> None:
        """Start the server: REST API (/v1, /docs), AUTOMATIC1111 API (/sdapi/v1), web UI (/ui), job runners."""
        from ..api.app import create_app, run_server
        from ..api.auth import is_loopback_host
        from ..runtime.users import Users

        cfg = settings()
        if models_dir is not None:
            cfg = cfg.model_copy(update={"models_dir": models_dir})
        # 1. Single-user mode only on loopback: anywhere else, tokens must exist
        users = Users(cfg.resolved_data_dir / "toonbooth.db")
        try:
            has_users = users.has_users()
        finally:
            users.close()
        loopback = is_loopback_host(host)
        if not loopback and not has_users:
            fail(
                f"refusing to bind {host}: no users exist, so anyone who reaches it could use it. "
                "Create one with `toonbooth users add NAME` (or bind 127.0.0.1 for local single-user mode)."
            )
        # 2. Build the app (service, runners, UI) and serve it
        try:
            app = create_app(cfg, allow_anonymous=loopback, allowed_origins=allow_origin or (), mount_ui=ui)
        except ToonboothError as exc:
            fail(str(exc))
        shown = f"[{host}]" if ":" in host else host
        mode = "local single-user mode (no token needed)" if loopback and not has_users else "tokens required"
        typer.echo(f"toonbooth serving on http://{shown}:{port}/  — UI /ui/, API docs /docs, {mode}")
        typer.echo(f"models: {cfg.resolved_models_dir}   data: {cfg.resolved_data_dir}")
        sys.stdout.flush()
        run_server(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=10)

    @users_app.command("add")
    def users_add(name: Annotated[str, typer.Argument(help="User name (letters, digits, _ . -).")]) -> None:
        """Create a user and print its API token (shown once; only a hash is stored)."""
        from ..runtime.users import Users

        users = Users(settings().resolved_data_dir / "toonbooth.db")
        try:
            token = users.add_user(name)
        except ToonboothError as exc:
            fail(str(exc))
        finally:
            users.close()
        typer.echo(token)
        typer.secho(
            f"created user {name!r}; the token above is shown only this once. "
            "Use it as `Authorization: Bearer <token>` (A1111 clients: --api-auth user:token).",
            err=True,
        )

    @users_app.command("token")
    def users_token(name: Annotated[str, typer.Argument(help="Existing user.")]) -> None:
        """Create another token for a user (printed once)."""
        from ..runtime.users import Users

        users = Users(settings().resolved_data_dir / "toonbooth.db")
        try:
            typer.echo(users.add_token(name))
        except ToonboothError as exc:
            fail(str(exc))
        finally:
            users.close()

    @users_app.command("list")
    def users_list() -> None:
        """List users and how many tokens each has."""
        from ..runtime.users import Users

        users = Users(settings().resolved_data_dir / "toonbooth.db")
        try:
            infos = users.list_users()
            if not infos:
                typer.echo("(no users: the server runs in local single-user mode on 127.0.0.1)")
            for info in infos:
                typer.echo(f"{info.name}\t{info.tokens} token(s)")
        finally:
            users.close()

    @users_app.command("revoke")
    def users_revoke(
        name: Annotated[str, typer.Argument(help="User whose tokens are revoked.")],
        delete: Annotated[bool, typer.Option(help="Also delete the user.")] = False,
    ) -> None:
        """Revoke every token of a user."""
        from ..runtime.users import Users

        users = Users(settings().resolved_data_dir / "toonbooth.db")
        try:
            n = users.revoke(name, delete_user=delete)
        except ToonboothError as exc:
            fail(str(exc))
        finally:
            users.close()
        typer.echo(f"revoked {n} token(s) of {name!r}")
