"""``python -m geed.report build|run|html|check ...``: the book driver's command line."""
import sys

from geed.report.book import main

sys.exit(main())
