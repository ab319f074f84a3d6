"""Data loading for the tasks (LM corpora, translation pairs, graphs); import submodules."""
