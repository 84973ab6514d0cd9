"""How the discriminator's training labels are made: one JSONL row per (response, constraint) with 0/1 per token.

make_labels.py  the token mapping (character spans -> token labels), the row format and file I/O, and the offline
                rule source (policy samples repaired and minimally broken by the rule editors)
rule_edits.py   the rule editors: repair a response to meet every constraint, then break one at a time
llm_labels.py   the paper's LLM sources: minimal modification by an editor LLM, and the greedy-extraction baseline
"""
