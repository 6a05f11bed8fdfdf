"""The HTTP/REST transport (`--http-port`): the Open Inference Protocol's REST form and our own
API as JSON, served by Starlette on uvicorn in the gRPC server's process and event loop, over
the same servicers and engine (docs/http.md)."""
