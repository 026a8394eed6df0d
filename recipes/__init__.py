"""The bundled recipes (``ndeconv recipes`` lists them), installed as the package data of
``ndeconv.recipes``: this folder is their one source."""
