"""`lmforge serve`: one HTTP server for every task, with continuous batching (see server.serve).

FastAPI and uvicorn (the serve extra) are imported only when a server is built or run, so the
library imports without them."""
