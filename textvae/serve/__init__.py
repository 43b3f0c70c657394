"""`textvae serve`: the poem studio, a local web app over saved models with a JSON API (textvae.serve.app).
FastAPI and uvicorn are an optional extra: `pip install -e ".[web]"`."""

import socket
from pathlib import Path

from textvae.errors import TextVAEError

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def check_port_free(host: str, port: int) -> None:
    """A one-line error before the models load when the address cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as e:
            raise TextVAEError(f"cannot serve on {host}:{port}: {e.strerror or e} (choose another --port or --host)") from e


def run(model_dirs: dict[str, Path], data_dir: Path | None, host: str = "127.0.0.1", port: int = 7860) -> None:
    """Load the models, then serve until interrupted."""
    try:
        import uvicorn

        from textvae.serve.app import create_app
    except ImportError as e:
        raise TextVAEError(f"the studio needs the web extra ({e.name} is missing): pip install -e \".[web]\"") from e
    check_port_free(host, port)
    app = create_app(model_dirs, data_dir)
    print(f"poem studio: http://{host if ':' not in host else f'[{host}]'}:{port}/ (models: {', '.join(model_dirs)}; "
          "the API's documentation at /api/docs; Ctrl-C stops it)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
