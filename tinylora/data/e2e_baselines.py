"""Two E2E outputs that learn nothing, the floor every trained method must clear.

    constant_sentence("name[The Mill], eatType[pub], area[riverside]")
        -> "The Mill is a restaurant."
    template_sentence("name[The Mill], eatType[pub], area[riverside]")
        -> "The Mill is a pub in the riverside area."

BLEU and ROUGE-L reward word overlap with the references, and every reference names the venue and
says what it is, so a sentence that copies the name already scores well above zero. A trained method
that does not beat the constant sentence has learned nothing the metric can see; one that does not
beat the one-line template has not learned more than a fixed slot order. (On the real E2E test set
such a template scores BLEU in the 50s; the challenge's trained baseline scored 65.9.)
"""

from __future__ import annotations

from tinylora.data.e2e import parse_mr


def constant_sentence(mr: str) -> str:
    """'<name> is a restaurant.': the same sentence for every MR but for the name."""
    return f"{parse_mr(mr)['name']} is a restaurant."


def template_sentence(mr: str) -> str:
    """One fixed sentence with a place for each attribute, always in the same order; absent slots are left out."""
    slots = parse_mr(mr)
    kind = slots.get("eatType", "restaurant")
    food = f" serving {slots['food']} food" if "food" in slots else ""
    area = f" in the {slots['area']} area" if "area" in slots else ""
    near = f" near {slots['near']}" if "near" in slots else ""
    facts = []
    if "priceRange" in slots:
        facts.append(f"a {slots['priceRange']} price range")
    if "customer rating" in slots:
        facts.append(f"a {slots['customer rating']} customer rating")
    family = {"yes": " It is family friendly.", "no": " It is not family friendly."}.get(slots.get("familyFriendly"), "")
    article = "an" if kind[0].lower() in "aeiou" else "a"
    text = f"{slots['name']} is {article} {kind}{food}{area}{near}."
    if facts:
        text += " It has " + " and ".join(facts) + "."
    return text + family
