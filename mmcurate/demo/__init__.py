"""Demo corpora: known-truth inputs built on the spot (`mmcurate demo`), for a first run and for tests."""
