"""Learning what each reader likes, and ranking their digest by it.

- :mod:`.space`: the word space (TF-IDF over hashed words), one vector per paper;
- :mod:`.model`: one reader's linear model, fitted from their ratings and likes;
- :mod:`.learn`: the cycle's step that refits the models whose examples changed;
- :mod:`.rank`: a delivery run's learned scores, and their blend with the rules' score;
- :mod:`.suggest`: papers the rules missed that a reader's taste ranks high.

Nothing here is imported until a reader has rated a paper or configured a like:
numpy, SciPy and scikit-learn cost most of a second to load.
"""

SUGGESTED = "suggested"  # the ``via`` of a paper a reader's taste suggested (subscribers[].suggest)
