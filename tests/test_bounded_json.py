"""bounded_json: the same refusal whichever way the depth is found, duplicate keys refused."""

import sys

import pytest

from sundae_core import bounded_json


@pytest.mark.parametrize("depth", [65, 200, 5000])
def test_too_deep_is_one_message_at_every_depth(depth):
    # 65 and 200 parse and are refused by the walk; 5000 makes json.loads itself recurse too far.
    # Which path a given depth takes depends on the caller's stack, so the message must not.
    with pytest.raises(bounded_json.JSONShapeError, match=r"^nested deeper than 64 levels$"):
        bounded_json.loads("[" * depth + "]" * depth)


def test_too_deep_under_a_deep_stack_is_still_the_same_message():
    def nest(levels):
        if levels == 0:
            return bounded_json.loads("[" * 300 + "]" * 300)
        return nest(levels - 1)

    with pytest.raises(bounded_json.JSONShapeError, match=r"^nested deeper than 64 levels$"):
        nest(sys.getrecursionlimit() - 400)


def test_sixty_four_levels_are_accepted():
    assert bounded_json.nesting_depth(bounded_json.loads("[" * 64 + "]" * 64)) == 64


def test_a_key_given_twice_is_refused():
    with pytest.raises(bounded_json.DuplicateKeyError):
        bounded_json.loads('{"a": 1, "a": 2}')
