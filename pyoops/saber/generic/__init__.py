"""Generic SABER blocks, registered through the ``generic`` entry point."""
