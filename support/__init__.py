"""What only makes the project run, kept off the reading path (README, "How the code is laid out").

Nothing here is part of the method: model loading, checkpoints and resume, settings checks, metrics rows and plots,
the constraint checkers' registry and NLTK data, LLM backends, the rule-code sandbox, the discriminator's tools.
"""
