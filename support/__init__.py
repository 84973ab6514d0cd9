"""What only makes the project run, kept off the reading path (README, "How the code is laid out").

Nothing here is part of the method: model loading, checkpoints and resume, settings checks, metrics rows and plots,
the constraint checkers' registry and NLTK data (checkers.py), LLM backends (llm.py), the rule-code sandbox
(rule_sandbox.py), the judge's command line (judge_cli.py), the discriminator's tools.
"""
