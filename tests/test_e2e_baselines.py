"""The no-training E2E rows (tinylora/data/e2e_baselines.py): known outputs, every attribute in the template."""

import pytest

from tinylora.data import constant_sentence, make_e2e, parse_mr, template_sentence


def test_constant_and_template_have_their_known_outputs():
    mr = "name[The Mill], eatType[pub], area[riverside]"
    assert constant_sentence(mr) == "The Mill is a restaurant."
    assert template_sentence(mr) == "The Mill is a pub in the riverside area."
    full = ("name[Juniper], eatType[coffee shop], food[Indian], priceRange[cheap], customer rating[high], "
            "area[city centre], familyFriendly[no], near[The Crown]")
    assert template_sentence(full) == ("Juniper is a coffee shop serving Indian food in the city centre area near "
                                       "The Crown. It has a cheap price range and a high customer rating. "
                                       "It is not family friendly.")


def test_the_template_names_every_value_of_every_mr():
    for row in make_e2e(50, seed=3):
        text = template_sentence(row["mr"])
        for slot, value in parse_mr(row["mr"]).items():
            if slot != "familyFriendly":
                assert value in text, (slot, value, text)


def test_a_malformed_mr_is_one_error_naming_it():
    with pytest.raises(ValueError, match="not a meaning representation"):
        template_sentence("The Mill, a pub")
