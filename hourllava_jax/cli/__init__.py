"""Entry points: each module's ``main(argv)`` backs a ``launch/*.py`` wrapper or a console script.

Imports flow down from here (``train/``, ``eval/``, ``infer/``, ``data/``, ``model/``, ``convert/``);
nothing in the package imports this package.
"""
