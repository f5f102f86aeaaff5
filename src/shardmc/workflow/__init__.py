"""Run directories: the ``shardmc`` command line (``cli``), a fit from a config into a run
directory and its resume (``runs``), the directory's files (``store``) and its HTML report
(``html_report``). Built on :mod:`shardmc.core`, :mod:`shardmc.config` and
:mod:`shardmc.xpcs`; nothing below imports it. Map: docs/architecture.md.
"""
