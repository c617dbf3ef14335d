"""The toolkit's version, in a module of its own so that any module can record it without
importing the package's public API (``awp/__init__.py`` imports everything)."""
__version__ = "0.1.0"
