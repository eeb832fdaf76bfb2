"""The study's questions, in the report's order: each module is the whole of one question (the runs it needs, its
constants and rule, its figures, its galleries) and ``templates/<lang>/questions/<name>.md.j2`` holds its text in
each language (summary title, figure and picture words, section). ``reports/build.py`` loops over QUESTIONS.

Adding a question: one plan in ``experiments/`` whose runs carry ``genlab.question=<name>``; one module here that
ends with ``QUESTION = Question("<name>", rule, figures, ...)`` (see reports/verdicts.py: Question), listed in
QUESTIONS below; two partials, ``templates/en/questions/<name>.md.j2`` and ``templates/fr/questions/<name>.md.j2``,
each defining ``title``, ``labels`` and the macro ``section(q, th)`` (copy an existing one). Nothing else changes.
"""

from __future__ import annotations

from reports.questions import p1q1, p1q2, p1q3, p2q1, p2q2
from reports.verdicts import Question

QUESTIONS: tuple[Question, ...] = (p1q1.QUESTION, p1q2.QUESTION, p1q3.QUESTION, p2q1.QUESTION, p2q2.QUESTION)
NAMES: tuple[str, ...] = tuple(q.name for q in QUESTIONS)
