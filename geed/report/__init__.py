"""The report: the book driver (:mod:`~geed.report.book`, run as ``python -m geed.report``), what a
chapter notebook uses (:class:`Chapter`), the verdict rules and their calibration
(:mod:`~geed.report.claims`, :mod:`~geed.report.calibration`), the claims ledger's page
(:mod:`~geed.report.ledger`), the result cache, charts, chapter
parameters, the inputs of the paper's protocol, and where outputs go (:mod:`~geed.report.paths`)."""
from geed.report.chapter import Chapter

__all__ = ["Chapter"]
