"""HTTP, one more thin adapter beside gRPC: the v2 inference protocol over REST (``v2``) and a
JSON API (``v1``), on Starlette under uvicorn in the gRPC server's process and event loop.

Handlers call the same data plane, job manager and dataset service as the gRPC servicers;
errors go through the same table (``server.interceptors.STATUS_CODES``) and then gRPC code ->
HTTP status (``server.http.errors``); the same token guards the same mutating operations,
named by their gRPC method (``server.interceptors.MUTATING_METHODS``).
"""
