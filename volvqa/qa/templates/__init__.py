"""The one registry of question templates, one module per category.

A template declares its id, category (Recognition, Measurement, Visual
Reasoning, Medical Reasoning, Localization), subtype, answer type, the
findings it needs (a case lacking them, or with an incomplete organ, yields
no item), two to four paraphrases, unit and rounding, the clinical rule it
applies (``volvqa.knowledge``) and an answer function (see ``base``).
Options are built later (``volvqa.qa.options``), from the whole dataset's
answers.

``base`` holds the records, ``register`` and the shared helpers;
``recognition``, ``measurement``, ``visual_reasoning``,
``medical_reasoning`` and ``localization`` register their category's
templates when this package is imported, then the chest family
(``volvqa.qa.chest``). A new question type is one function in its
category's module plus its test.
"""
from __future__ import annotations

from volvqa.qa import chest as _chest  # noqa: E402,F401,I001
from volvqa.qa.templates import localization, measurement, medical_reasoning, recognition, visual_reasoning  # noqa: E402,F401,I001  # noqa: E402,F401,I001
from volvqa.qa.templates.base import (  # noqa: F401  (the registry's public names)
    ANSWER_TYPES,
    CATEGORIES,
    TEMPLATES,
    Instance,
    Template,
    register,
    unmet_requirement,
)
