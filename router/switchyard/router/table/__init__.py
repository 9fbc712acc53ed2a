"""The routing table's life: reading and validating a document, packing it into
ConfigMaps, following a file or a ConfigMap as it changes, resolving key references.

The schema itself is ``contract``. May import ``kube``, ``contract`` and ``errors``.
"""
