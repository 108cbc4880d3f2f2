"""A generated E2E-style data-to-text task: restaurant attributes in, a description out.

The task. The E2E NLG Challenge (Novikova et al. 2017) pairs a meaning
representation (MR), 3 to 8 slot[value] attributes of a restaurant, with
descriptions written by people:

    mr:  name[The Copper Kettle], eatType[pub], food[French], area[riverside], near[The Mill]
    ref: The Copper Kettle is a French pub in the riverside area. It is close to The Mill.

Why it mirrors the paper. LoRA (Hu et al. 2021, Section 5.4, Table 3) adapts
GPT-2 medium and large to E2E: the prompt is the MR, the completion is the
text, the loss falls on the completion only, and a good model mentions every
attribute in fluent words. The real data cannot be downloaded here, so this
module builds the same kind of task from templates: the same 8 slots, value
lists like the real ones (restaurant names are invented), random subsets of
slots, and references that realize every attribute with varied phrasing and
order, 1 to 4 sentences each. `make_e2e(n, seed)` gives n MRs with
`refs_per_mr` references each, like the real CSV's rows.

Templates make it much easier than the real data, so scores are higher than
the paper's: compare methods (LoRA rank r, full fine-tuning) with each other,
not with Table 3.
"""

from __future__ import annotations

import csv
import random
import re
from pathlib import Path

from tinylora.data.pairs import e2e_pair, write_jsonl

SLOTS = ("name", "eatType", "food", "priceRange", "customer rating", "area", "familyFriendly", "near")

NAMES = (
    "The Copper Kettle", "Blue Lantern", "The Olive Grove", "Saffron House", "The Red Fox", "Little Fig",
    "The Golden Anchor", "Green Door", "The Mill", "Harbour Lights", "The Silver Spoon", "Juniper",
    "The Old Bakery", "Maple Court", "The Brass Monkey", "Lotus Garden", "The Wild Thyme", "Cafe Lumiere",
    "The Crown", "Stone Bridge",
)

VALUES = {
    "eatType": ("restaurant", "coffee shop", "pub"),
    "food": ("French", "Italian", "Chinese", "Japanese", "Indian", "English", "Fast food"),
    "priceRange": ("cheap", "moderate", "high", "less than £20", "£20-25", "more than £30"),
    "customer rating": ("low", "average", "high", "1 out of 5", "3 out of 5", "5 out of 5"),
    "area": ("riverside", "city centre"),
    "familyFriendly": ("yes", "no"),
}


def random_mr(rng: random.Random) -> dict[str, str]:
    """A name plus 2 to 7 of the other slots, with random values, in E2E's slot order."""
    others = rng.sample(SLOTS[1:], rng.randint(2, 7))
    mr = {"name": rng.choice(NAMES)}
    for slot in SLOTS[1:]:  # keep the canonical order
        if slot == "near" and slot in others:
            mr["near"] = rng.choice([n for n in NAMES if n != mr["name"]])
        elif slot in others:
            mr[slot] = rng.choice(VALUES[slot])
    return mr


def format_mr(mr: dict[str, str]) -> str:
    """{"name": "X", "area": "riverside"} -> "name[X], area[riverside]"."""
    return ", ".join(f"{slot}[{value}]" for slot, value in mr.items())


def parse_mr(text: str) -> dict[str, str]:
    """The inverse of `format_mr`."""
    pairs = re.findall(r"\s*([^,\[\]]+?)\[([^\]]*)\]\s*(?:,|$)", text)
    if not pairs or format_mr(dict(pairs)) != text.strip():
        raise ValueError(f"not a meaning representation of the form 'slot[value], slot[value]': {text!r}")
    return dict(pairs)


def realize(mr: dict[str, str], rng: random.Random) -> str:
    """One reference text for `mr` that mentions every attribute.

    Sentence 1 introduces the venue ("X is a pub", "There is a French pub called X"),
    maybe with one attribute attached ("... in the city centre") or put in front
    ("Near The Mill, ..."); the remaining attributes become predicates of later
    sentences ("It serves English food and has a low customer rating.").
    """
    name, kind = mr["name"], mr.get("eatType", "place")
    facts = [(slot, value) for slot, value in mr.items() if slot not in ("name", "eatType")]
    rng.shuffle(facts)

    noun = kind
    if "food" in mr and rng.random() < 0.4:  # "a French pub": the food slot as an adjective
        facts.remove(("food", mr["food"]))
        noun = f"{_food_adjective(mr['food'])} {kind}"
    intro = rng.choice([f"{name} is {_article(noun)} {noun}", f"there is {_article(noun)} {noun} called {name}"])

    frontable = [f for f in facts if f[0] in ("area", "near")]
    if frontable and rng.random() < 0.25:  # "In the city centre, there is ..."
        fact = rng.choice(frontable)
        facts.remove(fact)
        intro = f"{rng.choice(_modifiers(*fact))}, {intro}"
    if facts and rng.random() < 0.6:  # "... is a pub serving French food"
        intro += " " + rng.choice(_modifiers(*facts.pop(0)))
    sentences = [intro]

    predicates = [rng.choice(_predicates(*fact)) for fact in facts]
    subjects = ["it", name] + ([f"the {kind}"] if kind != "place" else [])
    while predicates:  # two or three predicates per sentence
        size = rng.randint(2, 3)
        group, predicates = predicates[:size], predicates[size:]
        sentences.append(f"{rng.choice(subjects)} {_join(group)}")
        subjects = ["it"]  # after the first, plain "It ..." reads best
    return " ".join(s[0].upper() + s[1:] + "." for s in sentences)


def make_e2e(n: int, seed: int = 0, refs_per_mr: int = 1) -> list[dict[str, str]]:
    """n random MRs with `refs_per_mr` references each: n * refs_per_mr rows {"mr": ..., "ref": ...}.

    Rows of one MR are adjacent, as in the real CSV. The same seed gives the same rows.
    """
    if n < 0 or refs_per_mr < 1:
        raise ValueError(f"need n >= 0 and refs_per_mr >= 1, got n={n}, refs_per_mr={refs_per_mr}")
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        mr = random_mr(rng)
        rows.extend({"mr": format_mr(mr), "ref": realize(mr, rng)} for _ in range(refs_per_mr))
    return rows


def write_e2e(rows, path) -> None:
    """Write rows as .csv (columns mr,ref, like the real E2E files) or .jsonl (prompt/completion pairs)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        with open(path, "w", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["mr", "ref"])
            writer.writeheader()
            writer.writerows({"mr": r["mr"], "ref": r["ref"]} for r in rows)
    elif suffix == ".jsonl":
        write_jsonl([e2e_pair(r["mr"], r["ref"]) for r in rows], path)
    else:
        raise ValueError(f"{path}: write E2E data as .csv or .jsonl, not {suffix!r}")


def _food_adjective(food: str) -> str:
    """ "French" -> "French" (a French pub); "Fast food" -> "fast food" (a fast food pub)."""
    return "fast food" if food == "Fast food" else food


def _food_noun(food: str) -> str:
    """ "French" -> "French food"; "Fast food" -> "fast food"."""
    return "fast food" if food == "Fast food" else f"{food} food"


def _article(noun: str) -> str:
    return "an" if noun[0].lower() in "aeiou" else "a"


def _join(phrases: list[str]) -> str:
    """["a"] -> "a"; ["a", "b"] -> "a and b"; ["a", "b", "c"] -> "a, b and c"."""
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _modifiers(slot: str, value: str) -> list[str]:
    """Ways to attach an attribute to a noun phrase: "a pub ___"."""
    if slot == "food":
        food = _food_noun(value)
        return [f"serving {food}", f"that serves {food}", f"offering {food}"]
    if slot == "priceRange":
        if value in ("cheap", "moderate", "high"):
            return [f"with {value} prices", f"in the {value} price range"]
        return [f"with prices of {value}", f"where a meal costs {value}"]
    if slot == "customer rating":
        if value in ("low", "average", "high"):
            return [f"with {_article(value)} {value} customer rating", f"rated {value} by customers"]
        return [f"with a customer rating of {value}", f"rated {value} by customers"]
    if slot == "area":
        if value == "riverside":
            return ["in the riverside area", "by the riverside", "located by the riverside"]
        return ["in the city centre", "located in the city centre"]
    if slot == "familyFriendly":
        if value == "yes":
            return ["that is family friendly", "that welcomes children", "which is kid friendly"]
        return ["that is not family friendly", "that does not welcome children"]
    if slot == "near":
        return [f"near {value}", f"close to {value}"]
    raise ValueError(f"unknown E2E slot {slot!r}; the slots are {SLOTS}")


def _predicates(slot: str, value: str) -> list[str]:
    """Ways to state an attribute of the venue: "It ___"."""
    if slot == "food":
        food = _food_noun(value)
        return [f"serves {food}", f"offers {food}", f"has {food} on the menu"]
    if slot == "priceRange":
        if value in ("cheap", "moderate", "high"):
            return [f"has {value} prices", f"is in the {value} price range"]
        return [f"has prices of {value}", f"charges {value} per meal"]
    if slot == "customer rating":
        if value in ("low", "average", "high"):
            return [f"has {_article(value)} {value} customer rating", f"is rated {value} by its customers"]
        return [f"has a customer rating of {value}", f"is rated {value} by customers"]
    if slot == "area":
        place = "the city centre" if value == "city centre" else "the riverside area"
        return [f"is in {place}", f"is located in {place}", f"can be found in {place}"]
    if slot == "familyFriendly":
        if value == "yes":
            return ["is family friendly", "is child friendly", "welcomes children"]
        return ["is not family friendly", "is not child friendly", "does not welcome children"]
    if slot == "near":
        return [f"is near {value}", f"is located near {value}", f"is close to {value}"]
    raise ValueError(f"unknown E2E slot {slot!r}; the slots are {SLOTS}")
