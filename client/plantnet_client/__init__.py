"""PlantNet API client: diagnose plant-leaf photos from files, folders, URLs and S3.

>>> from plantnet_client import Client
>>> with Client("http://127.0.0.1:5000") as client:            # doctest: +SKIP
...     for result in client.diagnose_many(["photos/"]):
...         print(result.source, result.label, result.confidence)

This package never imports the server, TensorFlow, OpenVINO or Flask.
"""

from .client import (
    DEFAULT_URL,
    OTHER_LABEL,
    Client,
    InDomain,
    PlantNetError,
    PlantResult,
    RequestRejected,
    Result,
    ServiceUnavailable,
    parse_retry_after,
)
from .sources import IMAGE_EXTENSIONS, Expander, Photo, SourceError

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_URL",
    "IMAGE_EXTENSIONS",
    "OTHER_LABEL",
    "Client",
    "Expander",
    "InDomain",
    "Photo",
    "PlantNetError",
    "PlantResult",
    "RequestRejected",
    "Result",
    "ServiceUnavailable",
    "SourceError",
    "__version__",
    "parse_retry_after",
]
