"""Fold protocols, one per module: each module registers one protocol with
:func:`sercache.splits.registry.register_protocol` when imported (see :func:`sercache.splits.registry.protocols`).

Modules here stay import-light (stdlib at the top, pandas inside functions): the CLI imports them to
build ``sercache train``'s ``--protocol`` choices and options.
"""
