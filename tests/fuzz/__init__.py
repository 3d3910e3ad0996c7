"""Fuzzing mapspec's readers and spec loader with hostile inputs.

* :mod:`fuzz.targets` -- the table of targets (one line per format).
* :mod:`fuzz.seeds` -- small valid seed files, made by our own writers from ``np.arange``.
* :mod:`fuzz.mutate` -- structure-aware mutations (truncations, bit flips, length-field
  edits, JSON/YAML/text token edits, zip member edits, splices).
* :mod:`fuzz.harness` -- runs one input against one target and judges the outcome.
* :mod:`fuzz.driver` -- the command line: ``campaign`` (deterministic, time-bounded, what
  ``tests/test_fuzz.py`` runs), ``atheris`` (coverage-guided, for long runs) and ``replay``.
* ``corpus/<target>/`` -- every input that ever broke a target; replayed by
  ``tests/test_fuzz.py::test_corpus_replays`` forever after.

Run ``python tests/fuzz/driver.py --help`` for usage.
"""
