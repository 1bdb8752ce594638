"""Stop strings over streamed text (sarai_llama.stops): pure, no model."""

from __future__ import annotations

import pytest

from sarai_llama.stops import StopMatcher, normalize_stops, stop_prefix_len


def test_stop_prefix_holdback():
    assert stop_prefix_len("hello wor", ["world"]) == 3
    assert stop_prefix_len("hello", ["xyz"]) == 0
    assert stop_prefix_len("ab", ["b!", "ab?"]) == 2


def test_normalize_stops():
    assert normalize_stops(None) == [] and normalize_stops("") == []
    assert normalize_stops("x") == ["x"] and normalize_stops(["a", "", "b"]) == ["a", "b"]
    with pytest.raises(ValueError):
        normalize_stops(["a", 3])  # type: ignore[list-item]


@pytest.mark.parametrize("pieces", [["Hello wor", "ld and more"], ["Hel", "lo", " w", "o", "rld"], ["Hello world"]])
def test_stop_straddling_pieces_is_cut_and_never_shown(pieces):
    m = StopMatcher(["world"])
    shown = []
    hit = False
    for piece in pieces:
        ready, hit = m.feed(piece)
        shown.append(ready)
        if hit:
            break
    assert hit and "".join(shown) == "Hello " and m.text == "Hello "


def test_held_back_prefix_is_released_when_it_was_not_a_stop():
    m = StopMatcher(["\n\n"])
    assert m.feed("a\n") == ("a", False)
    assert m.feed("b") == ("\nb", False)
    assert m.feed("\n") == ("", False)
    assert m.release_all() == "\n"  # the end of the generation: the held tail is text


def test_first_of_several_stops_wins():
    m = StopMatcher(["END", "x"])
    assert m.feed("abxcdEND") == ("ab", True)
    assert m.feed("more") == ("", True)


def test_no_stops_releases_everything_at_once():
    m = StopMatcher([])
    assert m.feed("abc") == ("abc", False) and m.feed("") == ("", False)
