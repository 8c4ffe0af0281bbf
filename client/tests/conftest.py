"""The client's tests run from the repository root (`pytest`, testpaths): the HTTP double and the S3 server
come from tests/ there, the client from client/ (pytest's pythonpath)."""

from tests.fake_plantnet import fake, url  # noqa: F401  (fixtures: the API's HTTP double on 127.0.0.1)
