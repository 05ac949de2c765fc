"""The application over the library: the quickstart pipeline and the HTML report's assembly.

The command line (:mod:`cfrec.cli`) and the notebooks call these; they combine the data,
models, evaluation and :mod:`cfrec.viz` plots, and hold no algorithm of their own.
"""
