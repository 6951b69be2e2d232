"""Hub ids that cannot be loaded fail in one line, before anything heavy is imported.

Kept free of torch and transformers so that the command line can check a model name in a
fraction of a second: without this, a machine without network spends minutes in the hub
client's retries before a traceback.
"""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import urlparse

# The default base model and its download size, for the line that says what is fetched.
DEFAULT_MODEL_SIZES = {"llava-hf/llava-1.5-7b-hf": "about 14 GB"}


def require_reachable(name_or_path: str) -> None:
    """Fail fast, in one line, when a hub id is neither cached nor downloadable; a local
    folder, a cached id and a reachable hub pass untouched."""
    if Path(name_or_path).exists() or name_or_path.count("/") != 1:
        return  # a local folder, or not a hub id (transformers says what is wrong)
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name_or_path, "config.json"), str):
        return
    fix = ("use --model PATH for a local copy, a tiny-* model to try the pipeline, or "
           "download it where there is network (HF_HUB_OFFLINE=1 then uses the cache)")
    if constants.HF_HUB_OFFLINE:
        raise FileNotFoundError(f"{name_or_path} is not in the local Hugging Face cache and "
                                f"HF_HUB_OFFLINE is set: {fix}")
    endpoint = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=10).close()
    except OSError as error:
        raise FileNotFoundError(f"{name_or_path} is not in the local Hugging Face cache and "
                                f"could not be downloaded ({endpoint.hostname}: {error}): "
                                f"{fix}") from None
