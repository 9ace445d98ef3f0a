"""``greentune serve``: a run's model over HTTP (FastAPI on uvicorn) with API keys, dynamic
batching, Prometheus metrics, hot reload and the energy of every request.

``settings`` (what the service is told), ``keys`` (hashed API keys), ``limits`` (per-key rate),
``masking`` (personal data in texts), ``engine`` (the loaded model, swapped on reload),
``batching`` (queue, batches, energy per batch), ``metrics``, ``middleware`` (body limit, access
record), ``service`` (one process's state and life), ``app`` (routes), ``server`` (uvicorn).
"""
