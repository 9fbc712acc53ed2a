"""Wire protocols: one module per protocol, both directions of its translation.

Each module holds one protocol's shapes (request and response bodies, stream events,
stop reasons, error bodies) and pure functions between them and the neutral types of
``core.chat``: inbound, what a client of that API sends and receives; outbound, what
Switchyard sends a provider of that API and reads back. No I/O happens here.

May import ``core`` (the neutral types), ``contract`` and ``errors``; imported by
``http`` (the API surfaces) and ``providers`` (the adapters).
"""
