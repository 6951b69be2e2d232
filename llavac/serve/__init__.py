"""HTTP serving of a LLaVAC classifier: a JSON API, a small offline page, one model per process.

``create_app(classifier)`` builds the FastAPI app around an already-loaded classifier (what
tests use); ``serve(model, ...)`` loads the model and runs it under uvicorn;
``python -m llavac.serve --model NAME`` does the same from a shell.
"""

from llavac.serve.app import create_app, model_info, prediction_json
from llavac.serve.inputs import ApiError, ServeLimits
from llavac.serve.server import is_loopback, serve

__all__ = [
    "ApiError",
    "ServeLimits",
    "create_app",
    "is_loopback",
    "model_info",
    "prediction_json",
    "serve",
]
