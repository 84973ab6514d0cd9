"""
Offline rule-based minimal modification: the label source that needs no LLM and no network (issue 6, source 2).

The paper (spec §4) labels a response token as relevant to constraint c_k by *minimal modification*: take a response
that meets every constraint, edit it as little as possible so that only c_k is violated, and mark what changed.
The paper asks an LLM to make both the response and the edits. Here a program does it, for every constraint family
of our bundled training set (data/make_data.py), in three steps per (prompt, policy sample):

1. `clean_base`  keep the plain sentences of a policy sample (markdown, brackets, digits-in-structure, non-ASCII
                 dropped; at most ~60 words). A 135M policy rarely meets its constraints, so we do not wait for it to.
2. `repair`      rebuild the response so that it meets *all* of the prompt's constraints: add the missing keyword
                 sentences, placeholders, highlights, bullets, title, postscript, *** dividers, end phrase, quotes,
                 fix the case, grow or shrink the body to the required length, ... (a `Doc` is rendered to text; the
                 length fixes loop until the checker agrees). Every constraint is then verified with the official
                 checker (support.checkers.run_checker); a sample that cannot be repaired is dropped and counted.
3. `violating_edits`  for constraint k, the family's editor proposes small string edits that break k (remove the
                 keyword, delete one bullet marker, merge two paragraphs, insert a comma, ...). An edit is kept only
                 if the checker says k now fails AND every other constraint of the prompt keeps its verdict.

Which tokens are labelled (our rule, the paper leaves it open; the token mapping is make_labels.py's):
- "span" families: the union over ALL kept minimal edits of the characters each edit changes in the original
  (`edit_char_spans`). When three bullets each satisfy "exactly 3 bullets", removing any one of them is a minimal
  edit, so all three markers are relevant: a single, arbitrarily chosen edit would give a label that no
  discriminator can predict (and a causal one cannot even see which bullet is last).
- "whole" families (`scope`): constraints that a minimal edit can break *anywhere*, i.e. constraints met by the
  absence of something or by a global count: no commas, forbidden words, all lowercase / all capitals, word and
  sentence counts, "less than N" keyword / letter / capital-word counts. The union of their minimal edits is every
  token, so every response token is labelled 1 (the labels say so: `scope="whole"`). Consequence for RTT: with
  intra-sample normalisation a constant relevance row gives a zero token advantage, so for these constraints only
  the response-level reward speaks, which is the honest outcome when no token is more to blame than another.
  One verified violating edit is still required, so a whole-response label exists only where the minimal-pair
  construction succeeded.

Everything here works on text; there is no tokenizer in this file. `check(instruction_id, kwargs, text) -> bool`
is passed in (support.checkers.run_checker bound to the prompt) so tests can inject it.
"""
import difflib
import hashlib
import random
import re
from dataclasses import dataclass, field

from support import checkers

FAMILIES = [  # the families of data/make_data.py, fixed list (IFEval ids then IFBench ids)
    "keywords:existence", "keywords:frequency", "keywords:forbidden_words", "keywords:letter_frequency",
    "length_constraints:number_words", "length_constraints:number_sentences", "length_constraints:number_paragraphs",
    "detectable_content:postscript", "detectable_content:number_placeholders", "detectable_format:number_bullet_lists",
    "detectable_format:number_highlighted_sections", "detectable_format:title", "startend:end_checker",
    "startend:quotation", "change_case:english_lowercase", "change_case:english_capital",
    "change_case:capital_word_frequency", "punctuation:no_comma",
    "count:word_count_range", "count:keywords_multiple", "sentence:keyword", "count:numbers", "format:emoji",
]
SPAN, WHOLE = "span", "whole"
_ALWAYS_WHOLE = {"punctuation:no_comma", "keywords:forbidden_words", "change_case:english_lowercase",
                 "change_case:english_capital", "length_constraints:number_words",
                 "length_constraints:number_sentences", "count:word_count_range"}


def scope(instruction_id: str, kwargs: dict | None) -> str:
    """"whole" when any token could break the constraint (see the module docstring), else "span"."""
    kwargs = kwargs or {}
    if instruction_id in _ALWAYS_WHOLE:
        return WHOLE
    relation = kwargs.get("relation") or kwargs.get("let_relation") or kwargs.get("capital_relation")
    if instruction_id in ("keywords:frequency", "keywords:letter_frequency", "change_case:capital_word_frequency") \
            and relation == "less than":
        return WHOLE  # an upper bound is broken by adding one more occurrence anywhere
    return SPAN


# ---------------------------------------------------------------------------------------------------------------
# The character-level diff (one rule for every label source)

_UNIT = re.compile(r"\w+|\s|[^\w\s]")  # words, single whitespace characters, single other characters


def edit_char_spans(original: str, edited: str) -> list[tuple[int, int]]:
    """Character spans of `original` that the edit changes.

    difflib.SequenceMatcher (no junk heuristic) over the text cut into units: words (\\w+), single whitespace
    characters and single other characters (punctuation, emoji, ...). A plain character diff would align a replaced
    word letter by letter ("cabin" -> "thing" keeps "in") and scatter the label; units keep a changed word whole.
    Each changed span is trimmed of the whitespace around it unless it is only whitespace (removing "* " from a
    bullet labels the "*", not the space).

    replace / delete of original[i:j]  -> (i, j)
    pure insertion before original[i]   -> (i, i): a zero-width span; the token mapping labels the token that
                                           contains character i (the first original token the insertion alters),
                                           and i == len(original) means "after the last character" (the EOS).

    >>> edit_char_spans("the red cat", "the big cat")
    [(4, 7)]
    >>> edit_char_spans("a b", "a, b")
    [(1, 1)]
    >>> edit_char_spans("P.S. Thanks", "Thanks")
    [(0, 4)]
    """
    a_units = [(m.start(), m.end()) for m in _UNIT.finditer(original)]
    a = [original[s:e] for s, e in a_units]
    b = [m.group(0) for m in _UNIT.finditer(edited)]
    starts = [s for s, _ in a_units] + [len(original)]
    spans = []
    for tag, i1, i2, _, _ in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        s, e = starts[i1], starts[i2]
        if e > s and original[s:e].strip():  # trim surrounding whitespace of a non-blank change
            s += len(original[s:e]) - len(original[s:e].lstrip())
            e -= len(original[s:e]) - len(original[s:e].rstrip())
        spans.append((s, e))
    return spans


def union_spans(spans) -> list[tuple[int, int]]:
    """Sorted, de-duplicated spans (zero-width spans kept as they are: they mark insertion points)."""
    return sorted(set(spans))


# ---------------------------------------------------------------------------------------------------------------
# Text helpers (comma-free, digit-free fillers so that they cannot break the constraints they are not about)

FILLER_SENTENCES = [
    "This is a simple point worth keeping in mind.",
    "Every small step helps us move forward.",
    "Good planning makes the whole task much easier.",
    "It is wise to check the details before moving on.",
    "Clear words help people understand each other.",
    "A calm approach often leads to better results.",
    "Time spent on preparation is rarely wasted.",
    "Many people find this idea useful in daily life.",
    "We can learn something new from every attempt.",
    "Small habits shape the way we work and rest.",
    "The best plans leave some room for change.",
    "Patience and care usually pay off in the end.",
]
FILLER_WORDS = ["thing", "part", "item", "piece", "bit"]
KEYWORD_TEMPLATES = ["This part is about the {w}.", "I keep thinking about the {w}.", "The {w} matters here.",
                     "Let us not forget the {w}.", "Everyone remembers the {w}.", "Here is a note on the {w}."]
MULTI_TEMPLATES = ["We talk about {ws}.", "There is {ws} here.", "Think of {ws}.", "The list has {ws}."]
NUMBER_TEMPLATES = ["It took {n} minutes.", "We counted {n} in total.", "About {n} people came.",
                    "The room holds {n} chairs.", "There were {n} of them."]
TITLES = ["My Answer", "Short Note", "Some Thoughts", "The Plan", "Notes For Today", "Quick Summary"]
BULLET_ITEMS = ["Plan the main steps.", "Check the result.", "Share the outcome.", "Keep a short record.",
                "Ask for feedback.", "Rest and review.", "Start with the basics.", "Write down the goal.",
                "Take small breaks."]
PLACEHOLDERS = ["name", "date", "address", "city", "company", "phone"]
POSTSCRIPT_TEXTS = ["I hope this helps.", "Thanks for reading.", "Let me know what you think.",
                    "More details will follow soon."]
EMOJIS = ["\U0001F60A", "\U0001F31F", "\U0001F389", "\U0001F44D", "\U0001F33F"]  # smile, star, party, thumbs, herb
LETTER_WORDS = ["apple", "bright", "careful", "dream", "even", "friendly", "great", "house", "idea", "jolly",
                "kind", "lively", "many", "number", "open", "people", "quiet", "river", "simple", "tree", "under",
                "very", "water", "extra", "yellow", "zebra"]
_WORD = re.compile(r"[A-Za-z][A-Za-z']*")
_SENT_END = re.compile(r"([.!?])(?=\s|$)")


def _filler_word(avoid: str = "") -> str:
    """A filler word that contains none of the given (lower-case) letters / substrings."""
    for w in FILLER_WORDS:
        if not any(a and a in w for a in avoid.split()):
            return w
    return "it"


def split_sentences(text: str) -> list[str]:
    """A plain splitter for base text (the checkers have their own; every result is verified with them)."""
    parts = re.split(r"(?<=[.!?])\s+", text.strip())
    return [p.strip() for p in parts if p.strip()]


def clean_base(text: str, max_words: int = 60, max_sentence_words: int = 25) -> list[str]:
    """The plain sentences of a policy sample: no markdown, brackets, quotes, digits, emoji, non-ASCII; short.

    >>> clean_base("## Title\\n* first point, with a comma\\n\\nSecond one [x] here. 3 apples are red!")
    ['Title first point with a comma Second one x here.', 'Apples are red!']
    """
    text = text.encode("ascii", "ignore").decode()
    text = re.sub(r"```.*?(```|$)", " ", text, flags=re.S)
    text = re.sub(r"[#*_`>\[\]{}<>\"|~^\\/=+@$%&()]", " ", text)  # markup and bracket characters
    text = re.sub(r"(?m)^\s*-\s*", " ", text)                      # "- " list markers
    text = re.sub(r"\d+", " ", text)
    text = re.sub(r"[,;:]\s*(?=[.!?])", "", text)
    text = text.replace(",", "")  # commas come back only where a constraint asks (none does here)
    text = re.sub(r"\s+", " ", text).strip()
    out, n = [], 0
    for s in split_sentences(text):
        words = s.split()
        if len(words) < 3 or not re.search(r"[A-Za-z]{3}", s):
            continue
        words = words[:max_sentence_words]
        s = " ".join(words)
        if s[-1] not in ".!?":
            s += "."
        if n + len(words) > max_words and out:
            break
        out.append(s[0].upper() + s[1:])
        n += len(words)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Step 2: repair. A response is a Doc (body sentences + structure) rendered to text in a fixed order.

@dataclass
class Doc:
    base: list = field(default_factory=list)      # sentences from the policy sample (the length fixes cut these)
    extra: list = field(default_factory=list)     # (slot in [0, 1), sentence) a constraint needs; never cut
    rng: random.Random = field(default_factory=random.Random)  # where things go: seeded per response by `repair`
    title: str | None = None
    paragraphs: int | None = None                 # join the body into this many ***-separated paragraphs
    bullets: list = field(default_factory=list)
    highlights: list = field(default_factory=list)  # one random number per *highlight*: which word of a sentence
    sentence_keyword: tuple | None = None         # (word, n, r): put `word` into the n-th sentence, at place r
    postscript: str | None = None
    end_phrase: str | None = None
    emoji: int = 0                                # 0: none; 1 + index into EMOJIS of the first one
    no_comma: bool = False
    forbidden: list = field(default_factory=list)
    drop_letter: str | None = None                # replace the words that contain this letter
    keyword_limits: dict = field(default_factory=dict)  # keyword -> max occurrences kept
    caps_up: int = 0                              # upper-case the first n eligible words
    caps_down: bool = False                       # lower-case every all-capital word
    case: str | None = None                       # "lower" | "upper"
    quote: bool = False

    def body(self) -> list:
        """Base sentences with the constraint sentences inserted at their slots (anywhere, not only at the end:
        a discriminator trained on keywords that always sit in a last, templated sentence learns the template)."""
        out = list(self.base)
        for slot, sentence in self.extra:
            out.insert(min(len(out), int(slot * (len(out) + 1))), sentence)
        return out

    def add(self, sentence: str) -> None:
        self.extra.append((self.rng.random(), sentence))

    def place(self, word: str) -> bool:
        """Put `word` in place of a random ordinary word (not a sentence's first) of a random base sentence; that
        sentence then stays (it moves to `extra`, at its old place). False when there is no such word."""
        spots = [(i, j) for i, sent in enumerate(self.base) for j, w in enumerate(sent.split(" "))
                 if j > 0 and len(w) >= 4 and w.isalpha() and w.islower()]
        if not spots:
            return False
        i, j = self.rng.choice(spots)
        words = self.base[i].split(" ")
        words[j] = word
        self.extra.append((i / max(len(self.base), 1), " ".join(words)))
        del self.base[i]
        return True

    def place_or_add(self, word: str, template: str | None = None, p_place: float = 0.7) -> None:
        """Usually `place` the word inside the policy's text, else add a template sentence with it."""
        if self.rng.random() < p_place and self.place(word):
            return
        self.add((template or self.rng.choice(KEYWORD_TEMPLATES)).format(w=word))


def _limit_occurrences(text: str, word: str, keep: int) -> str:
    """Keep the first `keep` case-insensitive occurrences of `word` (as a substring, like the checkers)."""
    seen = 0

    def sub(m):
        nonlocal seen
        seen += 1
        if seen <= keep:
            return m.group(0)
        whole = (m.start() == 0 or not text[m.start() - 1].isalnum()) and \
                (m.end() == len(text) or not text[m.end()].isalnum())
        return _filler_word(word.lower()) if whole else ""
    return re.sub(re.escape(word), sub, text, flags=re.IGNORECASE)


def render(doc: Doc) -> str:
    """Doc -> response text. The order matters (e.g. commas are removed after everything was added)."""
    body = list(doc.body())
    if doc.sentence_keyword:
        word, n, r = doc.sentence_keyword
        while len(body) < n:
            body.append(FILLER_SENTENCES[len(body) % len(FILLER_SENTENCES)])
        s = body[n - 1]
        if word.lower() not in s.lower():
            words = s.split(" ")
            spots = [j for j, w in enumerate(words) if j > 0 and len(w) >= 4 and w.isalpha() and w.islower()]
            if spots:  # in place of an ordinary word of that sentence
                words[spots[int(r * len(spots))]] = word
                body[n - 1] = " ".join(words)
            else:
                body[n - 1] = s[:-1] + f" and {word}" + s[-1] if s[-1] in ".!?" else s + f" and {word}."
    hl = 0
    for i, r in enumerate(doc.highlights[:len(body)]):  # never a first word: "*x* ..." at a line start is a bullet
        words = body[i].split(" ")
        spots = [j for j, w in enumerate(words) if j > 0 and w.isalpha()]
        if spots:
            j = spots[int(r * len(spots))]
            words[j] = f"*{words[j]}*"
            hl += 1
        body[i] = " ".join(words)
    if hl < len(doc.highlights) and body:  # too few sentences: highlight more words of the last one
        words = body[-1].split(" ")
        for j in range(2, min(len(words) - 1, 2 + 2 * (len(doc.highlights) - hl)), 2):
            if words[j].isalpha():
                words[j] = f"*{words[j]}*"
        body[-1] = " ".join(words)
    n_par = max(1, doc.paragraphs or 1)
    groups, start = [], 0
    for p in range(n_par):
        size = (len(body) - start) // (n_par - p) if n_par - p else 0
        groups.append(body[start:start + max(size, 0)])
        start += max(size, 0)
    paras = [" ".join(g) for g in groups]
    if doc.bullets:
        paras[-1] = (paras[-1] + "\n" if paras[-1] else "") + "\n".join("* " + b for b in doc.bullets)
    text = ("\n\n***\n\n" if doc.paragraphs else "\n\n").join(paras)
    if doc.title:
        text = f"<<{doc.title}>>\n\n" + text
    if doc.postscript:
        text += "\n\n" + doc.postscript
    for word in doc.forbidden:
        text = re.sub(r"\b" + re.escape(word) + r"\b", _filler_word(word.lower()), text, flags=re.IGNORECASE)
    for word, keep in doc.keyword_limits.items():
        text = _limit_occurrences(text, word, keep)
    if doc.drop_letter:
        letter = doc.drop_letter.lower()
        text = re.sub(r"[A-Za-z]*" + re.escape(letter) + r"[A-Za-z]*",
                      lambda m: _filler_word(letter), text, flags=re.IGNORECASE)
    if doc.end_phrase:
        text = text.rstrip() + " " + doc.end_phrase
    if doc.emoji:
        k = int(doc.emoji) - 1  # emoji = 1 + index of the first emoji used (then the next ones, in turn)
        ends = iter(range(10 ** 6))
        text = _SENT_END.sub(lambda m: m.group(1) + " " + EMOJIS[(k + next(ends)) % len(EMOJIS)], text)
    if doc.caps_down:
        text = _WORD.sub(lambda m: m.group(0).lower() if m.group(0).isupper() else m.group(0), text)
    if doc.caps_up:
        count = 0

        def up(m):
            nonlocal count
            w = m.group(0)
            if count < doc.caps_up and len(w) >= 3 and w.islower():
                count += 1
                return w.upper()
            return w
        text = _WORD.sub(up, text)
    if doc.no_comma:
        text = text.replace(",", "")
    if doc.case == "lower":
        text = text.lower()
    elif doc.case == "upper":
        text = text.upper()
    if doc.quote:
        text = '"' + text + '"'
    return text


def _count(pattern: str, text: str) -> int:
    return len(re.findall(pattern, text, flags=re.IGNORECASE))


def _fit_length(doc: Doc, ok, grow: bool, limit: int = 40) -> None:
    """Add filler sentences (grow) or drop base sentences from the end (shrink) until ok(doc)."""
    for i in range(limit):
        if ok(doc):
            return
        if grow:
            doc.base.append(FILLER_SENTENCES[(len(doc.base) + i) % len(FILLER_SENTENCES)])
        elif len(doc.body()) > 1 and doc.base:
            doc.base.pop()
        elif doc.base and len(doc.base[-1].split()) > 4:  # one long sentence left: cut words
            doc.base[-1] = " ".join(doc.base[-1].split()[:-3]) + "."
        else:
            return


def _repair_step(doc: Doc, iid: str, kw: dict, ok) -> None:
    """Change `doc` so that constraint (iid, kw) is met; `ok(doc)` asks the checker about the rendered text."""
    text = render(doc)
    if iid == "keywords:existence":
        for w in kw["keywords"]:
            if not re.search(re.escape(w), text, flags=re.IGNORECASE):
                doc.place_or_add(w)
    elif iid == "keywords:frequency":
        word, n = kw["keyword"], kw["frequency"]
        if kw["relation"] == "at least":
            for _ in range(n - _count(re.escape(word), text)):
                doc.place_or_add(word)
        else:
            doc.keyword_limits[word] = n - 1
    elif iid == "keywords:forbidden_words":
        doc.forbidden = list(kw["forbidden_words"])
    elif iid == "keywords:letter_frequency":
        letter, n = kw["letter"].lower(), kw["let_frequency"]
        if kw["let_relation"] == "at least":
            words = [w for w in LETTER_WORDS if letter in w] or [letter * 3]
            missing = n - text.lower().count(letter)
            while missing > 0:
                w = doc.rng.choice(words)
                doc.place_or_add(w, template="Some would call it {w}.")
                missing -= w.count(letter)
        else:
            doc.drop_letter = letter
    elif iid in ("length_constraints:number_words", "length_constraints:number_sentences"):
        _fit_length(doc, ok, grow=kw["relation"] == "at least")
    elif iid == "count:word_count_range":
        from_count = len(re.findall(r"\w+", text))
        _fit_length(doc, ok, grow=from_count < kw["min_words"])
    elif iid == "length_constraints:number_paragraphs":
        doc.paragraphs = kw["num_paragraphs"]
        while len(doc.body()) < doc.paragraphs:
            doc.base.append(FILLER_SENTENCES[len(doc.base) % len(FILLER_SENTENCES)])
    elif iid == "detectable_content:postscript":
        doc.postscript = f"{kw['postscript_marker'].strip()} {doc.rng.choice(POSTSCRIPT_TEXTS)}"
    elif iid == "detectable_content:number_placeholders":
        missing = kw["num_placeholders"] - len(re.findall(r"\[.*?\]", text))
        for i in range(max(missing, 0)):
            doc.place_or_add(f"[{doc.rng.choice(PLACEHOLDERS)}]", template="Please fill in {w} here.", p_place=0.5)
    elif iid == "detectable_format:number_bullet_lists":
        doc.bullets = doc.rng.sample(BULLET_ITEMS, min(kw["num_bullets"], len(BULLET_ITEMS)))
    elif iid == "detectable_format:number_highlighted_sections":
        doc.highlights = [doc.rng.random() for _ in range(kw["num_highlights"])]
    elif iid == "detectable_format:title":
        doc.title = doc.rng.choice(TITLES)
    elif iid == "startend:end_checker":
        doc.end_phrase = kw["end_phrase"].strip()
    elif iid == "startend:quotation":
        doc.quote = True
    elif iid == "change_case:english_lowercase":
        doc.case = "lower"
    elif iid == "change_case:english_capital":
        doc.case = "upper"
    elif iid == "change_case:capital_word_frequency":
        if kw["capital_relation"] == "at least":
            for _ in range(40):
                if ok(doc):
                    break
                doc.caps_up += 1
        else:
            doc.caps_down = True
    elif iid == "punctuation:no_comma":
        doc.no_comma = True
    elif iid == "count:keywords_multiple":
        words = [kw[f"keyword{i}"] for i in range(1, 6)]
        for w in words:
            doc.base = [re.sub(re.escape(w), "", s, flags=re.IGNORECASE) for s in doc.base]
        doc.extra = [(r, s) for r, s in doc.extra if not any(w.lower() in s.lower() for w in words)]
        for w, n in zip(words, [1, 2, 3, 5, 7]):
            together = 0
            for _ in range(n):  # each occurrence: in the policy's text, or with the others in one sentence
                if not (doc.rng.random() < 0.4 and doc.place(w)):
                    together += 1
            if together:
                doc.add(doc.rng.choice(MULTI_TEMPLATES).format(ws=" and ".join([w] * together)))
    elif iid == "sentence:keyword":
        doc.sentence_keyword = (kw["word"], kw["N"], doc.rng.random())
    elif iid == "count:numbers":
        doc.base = [re.sub(r"\s*\d+", "", s) for s in doc.base]
        doc.extra = [(r, re.sub(r"\s*\d+", "", s)) for r, s in doc.extra]
        for _ in range(kw["N"] - len(re.findall(r"\d+", render(doc)))):
            doc.add(doc.rng.choice(NUMBER_TEMPLATES).format(n=doc.rng.randint(2, 99)))
    elif iid == "format:emoji":
        doc.emoji = 1 + doc.rng.randrange(len(EMOJIS))
    else:
        raise KeyError(f"no repair rule for {iid!r}")


# Content first, then structure, then length (which counts everything added), then case, then the ends.
REPAIR_ORDER = [
    "count:keywords_multiple", "keywords:existence", "keywords:frequency", "count:numbers",
    "detectable_content:number_placeholders", "sentence:keyword", "keywords:letter_frequency",
    "keywords:forbidden_words", "detectable_format:title", "detectable_format:number_bullet_lists",
    "detectable_format:number_highlighted_sections", "length_constraints:number_paragraphs",
    "detectable_content:postscript", "startend:end_checker", "format:emoji", "punctuation:no_comma",
    "change_case:english_lowercase", "change_case:english_capital", "startend:quotation",
    "length_constraints:number_words", "count:word_count_range", "length_constraints:number_sentences",
    "change_case:capital_word_frequency",
]


def repair(base_sentences: list, items: list, check, passes: int = 3, seed: int | None = None) -> str | None:
    """A response meeting every constraint in `items` [(instruction_id, kwargs)], built around the base sentences.

    Where things go (which word a keyword replaces, which template, which emoji, ...) is random, seeded by `seed`
    or, by default, by the base text and the constraints (same input, same response). Returns None when the checker
    still rejects some constraint after `passes` rounds (the caller counts it).
    """
    order = {iid: i for i, iid in enumerate(REPAIR_ORDER)}
    items = sorted(items, key=lambda it: order.get(it[0], len(order)))
    if seed is None:
        seed = int(hashlib.md5(repr((base_sentences, items)).encode()).hexdigest()[:8], 16)
    doc = Doc(base=list(base_sentences), rng=random.Random(seed))
    for _ in range(passes):
        for iid, kw in items:
            ok = (lambda d, iid=iid, kw=kw: check(iid, kw, render(d)))
            if not ok(doc):
                _repair_step(doc, iid, kw, ok)
        text = render(doc)
        if all(check(iid, kw, text) for iid, kw in items):
            return text
    return None


# ---------------------------------------------------------------------------------------------------------------
# Step 3: the minimal violating edits, one editor per family. Each returns candidate edited texts, most specific
# first; `violating_edits` keeps those that the checker confirms.

def _replace_spans(text: str, spans: list, repl) -> str:
    """Replace text[s:e] for each (s, e) (non-overlapping) by repl(matched_text)."""
    out, last = [], 0
    for s, e in sorted(spans):
        out.append(text[last:s])
        out.append(repl(text[s:e]))
        last = e
    return "".join(out) + text[last:]


def _neutral(text: str, s: int, e: int, word: str) -> str:
    """Replacement for an occurrence of `word` at text[s:e]: a filler word if it is a whole word, else nothing."""
    whole = (s == 0 or not text[s - 1].isalnum()) and (e == len(text) or not text[e].isalnum())
    return _filler_word(word.lower()) if whole else ""


def _windows(items: list, size: int, max_windows: int = 12) -> list:
    """Runs of `size` consecutive items, at most `max_windows` of them, spread over the list (their union covers
    every item when max_windows allows)."""
    n = len(items)
    if size <= 0 or size > n:
        return []
    starts = list(range(0, n - size + 1))
    if len(starts) > max_windows:
        step = (len(starts) - 1) / (max_windows - 1)
        starts = sorted({round(i * step) for i in range(max_windows)})
    return [items[s:s + size] for s in starts]


def _remove_occurrences(text: str, spans: list, word: str) -> str:
    """Each occurrence of `word` at spans -> a filler word (whole word) or nothing (inside a longer word)."""
    out, last = [], 0
    for s, e in sorted(spans):
        out += [text[last:s], _neutral(text, s, e, word)]
        last = e
    return "".join(out) + text[last:]


def _word_spans(text: str, pred=lambda w: True) -> list:
    return [(m.start(), m.end()) for m in _WORD.finditer(text) if pred(m.group(0))]


def _edit_keywords_existence(text, kw):
    out = []
    for w in kw["keywords"]:
        spans = [(m.start(), m.end()) for m in re.finditer(re.escape(w), text, flags=re.IGNORECASE)]
        if spans:
            out.append(_remove_occurrences(text, spans, w))
    return out


def _edit_keyword_count_at_least(text, word, n):
    spans = [(m.start(), m.end()) for m in re.finditer(re.escape(word), text, flags=re.IGNORECASE)]
    return [_remove_occurrences(text, win, word) for win in _windows(spans, len(spans) - n + 1)]


def _edit_add_word(text, word, times=1):
    """Whole-scope helper: put `word` in place of `times` ordinary words, at a few different places (in the case
    of the word it replaces, so that an all-capitals or all-lowercase response keeps its case)."""
    spans = _word_spans(text, lambda w: len(w) >= 4 and (w.islower() or w.isupper()))
    same_case = lambda m: word.upper() if m.isupper() else word.lower()  # noqa: E731
    out = []
    for start in (len(spans) // 2, 0, len(spans) - times):
        chosen = spans[max(start, 0):max(start, 0) + times]
        if len(chosen) == times:
            out.append(_replace_spans(text, chosen, same_case))
    return out


def _edit_keywords_frequency(text, kw):
    word, n = kw["keyword"], kw["frequency"]
    if kw["relation"] == "at least":
        return _edit_keyword_count_at_least(text, word, n)
    have = _count(re.escape(word), text)
    return _edit_add_word(text, word, max(1, n - have))


def _edit_forbidden(text, kw):
    return [e for w in kw["forbidden_words"][:2] for e in _edit_add_word(text, w)]


def _edit_letter_frequency(text, kw):
    letter, n = kw["letter"].lower(), kw["let_frequency"]
    if kw["let_relation"] == "at least":
        spans = [(m.start(), m.end()) for m in re.finditer(re.escape(letter), text, flags=re.IGNORECASE)]
        other = "x" if letter != "x" else "y"
        swap = lambda m: other.upper() if m.isupper() else other  # noqa: E731
        return [_replace_spans(text, win, swap) for win in _windows(spans, len(spans) - n + 1)]
    need = n - text.lower().count(letter)
    return _edit_add_word(text, letter * max(need, 1))


def _edit_length(text, grow_words: int = 0, shrink: bool = False):
    """Whole-scope length edits: insert filler sentences after the first sentence, or delete middle sentences."""
    m = _SENT_END.search(text)
    cut = m.end() if m else len(text)
    out = []
    if grow_words:
        add, n = [], 0
        while n < grow_words:
            s = FILLER_SENTENCES[len(add) % len(FILLER_SENTENCES)]
            add.append(s)
            n += len(s.split())
        out.append(text[:cut] + " " + " ".join(add) + text[cut:])
    if shrink:  # delete runs of whole sentences (never the first or the last), shortest runs first
        ends = [m.end() for m in _SENT_END.finditer(text)]
        for size in range(1, len(ends) - 1):
            for i in range(1, len(ends) - size):
                out.append(text[:ends[i - 1]] + text[ends[i + size - 1]:])
                if len(out) >= 200:
                    return out
    return out


def _words(text):
    return len(re.findall(r"\w+", text))


def _edit_number_words(text, kw):
    n = kw["num_words"]
    if kw["relation"] == "less than":
        return _edit_length(text, grow_words=n - _words(text) + 1)
    return _edit_length(text, shrink=True)


def _edit_word_count_range(text, kw):
    return _edit_length(text, grow_words=kw["max_words"] - _words(text) + 1) + _edit_length(text, shrink=True)


def _edit_number_sentences(text, kw):
    if kw["relation"] == "less than":  # filler sentences have ~8 words: this adds about num_sentences of them
        return _edit_length(text, grow_words=8 * kw["num_sentences"])
    return _edit_length(text, shrink=True)


def _edit_paragraphs(text, kw):
    spans = [(m.start(), m.end()) for m in re.finditer(r"\s?\*\*\*\s?", text)]
    return [text[:s] + "\n\n" + text[e:].lstrip() for s, e in spans]


def _postscript_pattern(marker: str) -> str:
    if marker == "P.P.S":
        return r"p\.\s?p\.\s?s\.?\s?"
    if marker == "P.S.":
        return r"p\.\s?s\.\s?"
    return re.escape(marker) + r"\s?"


def _edit_postscript(text, kw):
    spans = [(m.start(), m.end()) for m in re.finditer(_postscript_pattern(kw["postscript_marker"].strip()), text,
                                                       flags=re.IGNORECASE)]
    return [_replace_spans(text, spans, lambda m: "")] if spans else []


def _edit_placeholders(text, kw):
    spans = [(m.start(), m.end()) for m in re.finditer(r"\[.*?\]", text)]
    need = len(spans) - kw["num_placeholders"] + 1
    return [_replace_spans(text, win, lambda m: m[1:-1]) for win in _windows(spans, need)]


def _edit_bullets(text, kw):
    spans = [(m.start(1), m.end(1)) for m in re.finditer(r"^\s*(\*\s*)[^\*]", text, flags=re.MULTILINE)]
    spans += [(m.start(1), m.end(1)) for m in re.finditer(r"^\s*(-\s*)", text, flags=re.MULTILINE)]
    return [_replace_spans(text, [sp], lambda m: "") for sp in sorted(spans)]


def _edit_highlights(text, kw):
    spans = [(m.start(), m.end()) for m in re.finditer(r"\*[^\n\*]*\*", text) if m.group(0).strip("*").strip()]
    strip = lambda m: m[1:-1]  # noqa: E731
    return [_replace_spans(text, win, strip) for win in _windows(spans, len(spans) - kw["num_highlights"] + 1)]


def _edit_title(text, kw):
    spans = [(m.start(), m.end()) for m in re.finditer(r"<<[^\n]+>>", text)]
    return [_replace_spans(text, spans, lambda m: m[2:-2])] if spans else []


def _edit_end_checker(text, kw):
    phrase = kw["end_phrase"].strip()
    m = None
    for m in re.finditer(re.escape(phrase), text, flags=re.IGNORECASE):
        pass
    if m is None:
        return []
    return [text[:m.start()].rstrip() + text[m.end():],   # drop the phrase
            text[:m.end()] + "!" + text[m.end():]]         # a character after it


def _edit_quotation(text, kw):
    s, e = len(text) - len(text.lstrip()), len(text.rstrip())
    out = []
    if text[s:s + 1] == '"':
        out.append(text[:s] + text[s + 1:])
    if text[e - 1:e] == '"':
        out.append(text[:e - 1] + text[e:])
    return out


def _edit_lowercase(text, kw):
    spans = _word_spans(text, lambda w: len(w) >= 3 and w.islower())
    return [_replace_spans(text, [sp], lambda w: w.capitalize()) for sp in spans[:3]]


def _edit_capital(text, kw):
    spans = _word_spans(text, lambda w: len(w) >= 3 and w.isupper())
    return [_replace_spans(text, [sp], lambda w: w.lower()) for sp in spans[:3]]


def _edit_capital_words(text, kw):
    n = kw["capital_frequency"]
    if kw["capital_relation"] == "at least":
        spans = _word_spans(text, lambda w: w.isupper())
        return [_replace_spans(text, win, str.lower) for win in _windows(spans, len(spans) - n + 1)]
    spans = _word_spans(text, lambda w: len(w) >= 3 and w.islower())
    have = len(_word_spans(text, lambda w: w.isupper()))
    k = max(1, n - have)
    return [_replace_spans(text, spans[s:s + k], str.upper) for s in (0, len(spans) // 2) if len(spans[s:s + k]) == k]


def _edit_no_comma(text, kw):
    ends = [m.end() for m in _WORD.finditer(text)]
    return [text[:e] + "," + text[e:] for e in ends[1:4]]


def _edit_keywords_multiple(text, kw):
    out = []
    for i in range(1, 6):
        w = kw[f"keyword{i}"]
        for m in list(re.finditer(re.escape(w), text, flags=re.IGNORECASE))[:8]:
            out.append(text[:m.start()] + _neutral(text, m.start(), m.end(), w) + text[m.end():])
    return out


def _edit_sentence_keyword(text, kw):
    word = kw["word"]
    spans = [(m.start(), m.end()) for m in re.finditer(re.escape(word), text, flags=re.IGNORECASE)]
    if not spans:
        return []
    ends = [m.end() for m in _SENT_END.finditer(text)] + [len(text)]
    groups = {}
    for s, e in spans:  # occurrences grouped by (approximate) sentence: the n-th sentence's group flips it
        groups.setdefault(next(i for i, end in enumerate(ends) if s < end), []).append((s, e))
    out = [_remove_occurrences(text, g, word) for g in groups.values()]
    out += [_remove_occurrences(text, [sp], word) for sp in spans if len(spans) > 1]
    return out


def _edit_numbers(text, kw):
    spans = [(m.start(), m.end()) for m in re.finditer(r"\d+(?:[.,]\d+)*", text)]
    return [_replace_spans(text, [sp], lambda m: "many") for sp in spans]


def _edit_emoji(text, kw):
    import emoji
    spans = [(e["match_start"], e["match_end"]) for e in emoji.emoji_list(text)]
    out = []
    for s, e in spans:
        s2 = s - 1 if s > 0 and text[s - 1] == " " else s
        out.append(text[:s2] + text[e:])
    return out


EDITORS = {
    "keywords:existence": _edit_keywords_existence,
    "keywords:frequency": _edit_keywords_frequency,
    "keywords:forbidden_words": _edit_forbidden,
    "keywords:letter_frequency": _edit_letter_frequency,
    "length_constraints:number_words": _edit_number_words,
    "length_constraints:number_sentences": _edit_number_sentences,
    "length_constraints:number_paragraphs": _edit_paragraphs,
    "detectable_content:postscript": _edit_postscript,
    "detectable_content:number_placeholders": _edit_placeholders,
    "detectable_format:number_bullet_lists": _edit_bullets,
    "detectable_format:number_highlighted_sections": _edit_highlights,
    "detectable_format:title": _edit_title,
    "startend:end_checker": _edit_end_checker,
    "startend:quotation": _edit_quotation,
    "change_case:english_lowercase": _edit_lowercase,
    "change_case:english_capital": _edit_capital,
    "change_case:capital_word_frequency": _edit_capital_words,
    "punctuation:no_comma": _edit_no_comma,
    "count:word_count_range": _edit_word_count_range,
    "count:keywords_multiple": _edit_keywords_multiple,
    "sentence:keyword": _edit_sentence_keyword,
    "count:numbers": _edit_numbers,
    "format:emoji": _edit_emoji,
}
assert sorted(EDITORS) == sorted(FAMILIES), "one editor per family of data/make_data.py"


@dataclass
class EditResult:
    scope: str                 # "span" | "whole"
    edits: list                # verified edited texts (each violates only constraint k)
    spans: list                # union of the original-text character spans the kept edits change
    tried: int                 # candidates proposed
    reason: str = ""           # why nothing was kept ("no candidate", "flips another constraint", ...)


def violating_edits(text: str, items: list, k: int, check, max_edits: int = 32) -> EditResult:
    """Minimal edits of `text` that break constraint k of `items` [(instruction_id, kwargs)] and only it.

    Precondition: `text` meets every constraint (as `repair` returns it). For a "whole" constraint one verified
    edit is enough (its label is every token); for a "span" one, up to `max_edits` are kept and their spans united.
    """
    iid, kw = items[k]
    sc = scope(iid, kw)
    cands = [c for c in dict.fromkeys(EDITORS[iid](text, kw)) if c != text and c.strip()]
    kept, reasons = [], []
    for cand in cands:
        if check(iid, kw, cand):
            reasons.append("still met")
            continue
        if not all(check(i2, kw2, cand) for j, (i2, kw2) in enumerate(items) if j != k):
            reasons.append("flips another constraint")
            continue
        kept.append(cand)
        if len(kept) >= (1 if sc == WHOLE else max_edits):
            break
    spans = union_spans(sp for e in kept for sp in edit_char_spans(text, e))
    reason = "" if kept else (max(set(reasons), key=reasons.count) if reasons else "no candidate")
    return EditResult(sc, kept, spans, len(cands), reason)


def checker_for(prompt_text: str = ""):
    """checkers.run_checker bound to a prompt; a crashing checker counts as "not met" (and is not an edit we trust)."""

    def check(iid, kw, text):
        try:
            return checkers.run_checker(iid, kw, text, prompt_text)
        except checkers.CheckerError:
            return False
    return check
