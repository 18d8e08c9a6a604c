"""A lexical veto on semantic matches: two prompts that differ in a number, a negation, a contrast word
or only in word order are different questions, however close their embeddings.

all-MiniLM-L6-v2 mean-pools its token vectors, so it is nearly blind to what matters most for reusing
an answer: "convert 5 miles to kilometers" vs "convert 5 kilometers to miles" scores 0.993, "is it safe
to eat raw eggs" vs "is it not safe ..." 0.993, "enable" vs "disable dark mode" 0.954 (the paraphrase
set, tests/fixtures/semantic/paraphrases.jsonl). No threshold separates those from true paraphrases
("how do I exit vim" vs "how do I quit vim": 0.878). So every indexed entry keeps a short *signature*
of its text and a vector match is served only when the asking text's signature is compatible:

- the same numbers (digits, number words, ordinals), in any order;
- the same count of negations (not, no, never, n't, without...);
- the same contrast words (enable/disable, high/low, advantages/disadvantages...): a word from that
  list on one side only means the other side asks the opposite or another variant;
- no relation reversed: 'x to/in/into/from/per/than y' on one side, 'y ... x' on the other
  ("string to integer" vs "integer to string", "ounces in a pound" vs "pounds in an ounce").

The signature is a string (it travels in a vector store's payload): it holds numbers, contrast words
and 3-byte hashes of word pairs, never the prompt itself. Cost: ~10 µs per text, once at lookup and once at fill.
"""

from __future__ import annotations

import hashlib
import re

__all__ = ["compatible", "signature"]

_WORD = re.compile(r"[a-z0-9]+(?:[.,][0-9]+)*")
_NEGATIONS = frozenset({"not", "no", "never", "without", "nor", "none", "nothing", "neither", "nobody"})


def _words(listing: str) -> frozenset[str]:
    return frozenset(listing.split())


_NUMBER_WORDS = _words(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred "
    "thousand million billion trillion first second third fourth fifth sixth seventh eighth ninth tenth "
    "last once twice thrice half double triple quarter dozen"
)
# Words whose presence on one side only flips or narrows the question. Ubiquitous words with a
# contrast partner ("on", "in", "up") are left out; their partners ("off", "out", "down") suffice.
_CONTRAST = _words(
    """
    off out down under below after before less fewer more least most max maximum min minimum
    high higher highest low lower lowest long longer longest short shorter shortest big bigger biggest
    small smaller smallest large larger largest tall taller tallest hot hotter cold colder warm cool
    soft hard fast faster slow slower old older oldest new newer newest young younger early late
    good better best bad worse worst easy easiest difficult hardest cheap cheapest expensive
    enable disable enabled disabled install uninstall lock unlock hide connect disconnect
    encrypt decrypt encode decode compress decompress serialize deserialize import export
    upload download push pull send receive buy sell win lose add remove insert delete create destroy
    start stop begin end open close increase decrease raise lower allow deny accept reject
    dislike advantage disadvantage advantages disadvantages pro con pros cons benefit benefits
    risk risks drawback drawbacks synonym antonym opposite similar positive negative true false
    left right north south east west horizontal vertical vertically horizontally ascending descending
    input output read write private public male female freezing boiling melting plural singular
    worst-case best-case average vegan vegetarian gluten free
    """
)
_STOP = _words(
    """
    a an the is are was were be been being am do does did doing done to of in on at for by with from
    into onto about as and or but if then than that this these those it its it's i me my we our you
    your he she they them their there here what what's which who whom whose when where why how can
    could would should will shall may might must please tell give show explain describe let us
    s some any way ways get got make one's just also really very
    """
)
_CONTRACTIONS = (("n't", " not"), ("'re", " are"), ("'ve", " have"), ("'ll", " will"), ("'m", " am"))


def _stem(w: str) -> str:
    """Plural and possessive folding only: 'ounces' == 'ounce', 'dicts' == 'dict'."""
    if len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
        return w[:-1]
    return w


_RELATIONS = frozenset({"to", "into", "in", "per", "from", "than", "over", "versus", "vs"})


def _h(a: str, b: str) -> str:
    return hashlib.blake2b(f"{a}>{b}".encode(), digest_size=3).hexdigest()


def _relations(words: list[str]) -> tuple[list[str], list[str]]:
    """Hashes of (content word before, content word after) each relation word ('string to integer'),
    and of the same pairs reversed."""
    fwd: list[str] = []
    rev: list[str] = []
    for i, w in enumerate(words):
        if w not in _RELATIONS:
            continue
        before = next((x for x in reversed(words[:i]) if x not in _STOP and x not in _RELATIONS), None)
        after = next((x for x in words[i + 1 :] if x not in _STOP and x not in _RELATIONS), None)
        if before and after and _stem(before) != _stem(after):
            fwd.append(_h(_stem(before), _stem(after)))
            rev.append(_h(_stem(after), _stem(before)))
    return fwd, rev


def signature(text: str) -> str:
    """`numbers|negations|contrast words|relations|reversed relations` of a prompt (no prompt words kept except
    numbers and contrast words)."""
    t = text.lower().replace("\u2019", "'").replace("cannot", "can not")
    for short, long in _CONTRACTIONS:
        t = t.replace(short, long)
    words = _WORD.findall(t)
    numbers = sorted(w for w in words if w[0].isdigit() or w in _NUMBER_WORDS)
    negations = sum(w in _NEGATIONS for w in words)
    contrast = sorted({w for w in words if w in _CONTRAST})
    fwd, rev = _relations(words)
    return "|".join((",".join(numbers), str(negations), ",".join(contrast), ",".join(fwd), ",".join(rev)))


def compatible(a: str, b: str) -> bool:
    """Whether an answer to the prompt signed `a` may serve the prompt signed `b` (symmetric).

    An empty signature (an entry indexed before signatures existed) is compatible with anything.
    """
    if not a or not b or a == b:
        return True
    na, ga, ca, fa, _ = a.split("|")
    nb, gb, cb, _, rb = b.split("|")
    if na != nb or ga != gb or ca != cb:
        return False
    # 'x to y' on one side, 'y to x' on the other: a swapped question (the relation is symmetric:
    # b's pairs reversed meet a's pairs exactly when a's reversed meet b's).
    return not (fa and rb and set(fa.split(",")) & set(rb.split(",")))
