"""The study's report: verdicts computed from tracked runs, written in French and English (``genlab report``)."""
