"""One module per engine behind ``backends.base.Backend``.

Heavy SDKs are imported inside the backend that needs them, never at package import.
"""
