"""Questions: the template registry and everything question-side.

- ``templates``: one registry of question templates (generation, grounded
  answering and trace replay all use the same entry).
- ``qid``: the one codec between an item's parameters and its qid.
- ``readings``: a question's template readings, and answers as text / option letters.
- ``freetext``: natural wordings -> readings.
- ``generate`` / ``options`` / ``balance`` / ``audit``: raw items, distractors,
  balancing, the shortcut audit.
- ``prompts``: what a model is asked (volvqa's and DeepTumorVQA's wording).
- ``dtv``: DeepTumorVQA v2's subtypes, answer types and scoring rules.
"""
