"""HTTP serving of a LLaVAC classifier: a JSON API, a small offline page, one model per process.

``create_app(classifier, ServeArgs(...))`` builds the FastAPI app around an already-loaded
classifier (what tests use); ``serve(ServeConfig)`` runs it under uvicorn with the model
loading behind the open port; ``llavac serve`` does the same from a shell.
"""

from llavac.serve.app import create_app, served_model_card
from llavac.serve.auth import is_loopback
from llavac.serve.errors import ApiError
from llavac.serve.limits import ServeLimits
from llavac.serve.routes import prediction_json
from llavac.serve.server import serve

__all__ = [
    "ApiError",
    "ServeLimits",
    "create_app",
    "is_loopback",
    "prediction_json",
    "served_model_card",
    "serve",
]
