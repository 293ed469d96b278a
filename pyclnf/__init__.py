"""PyCLNF."""
