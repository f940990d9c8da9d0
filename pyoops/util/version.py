"""The version of pyoops, in the lowest layer so that any module can name it (archives, file headers)."""

__version__ = "0.1.0"
