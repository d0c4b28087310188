"""The plain-ASCII e-mail fast path against email-validator: wherever it answers, it answers as the library does.

Three claims, on a corpus of tricky addresses and on hypothesis' inventions: (1) an address the fast path accepts
normalises to exactly email-validator's `normalized.lower()`; so (2) an address the library refuses is never
accepted; (3) `normalise` gives the library-only result, or the same 422.
"""

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from app.services.subjects.identifiers import InvalidIdentifier, _plain_email, _validated_email, normalise

ATEXT = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+/=?^_`{|}~-"
HOST = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-"
# What sits around addresses or stands in for their parts: specials, whitespace, look-alikes (Cyrillic а and е,
# Greek ο, fullwidth ＠ and ．, small commercial at, ideographic full stop, the Kelvin sign K, dotless ı, long s ſ,
# combining marks, zero-width and bidi controls, Arabic-Indic digits, fullwidth letters).
TRICKY = ' ."@()<>[]\\,;:\t\r\n\x00\x7f\u0430\u0435\u03bf\uff20\uff0e\ufe6b\u3002\u212a\u0131\u017f\u0301\u0338' \
    '\u200b\u200d\u202e\u00a0\u0660\uff41\u00e9\u00df'

PLAIN = [  # the fast path must take these itself, or it wins nothing
    "jane.doe@example.com", "Jane.Doe@Example.COM", "a@b.co", "first+tag@sub.domain.example.org",
    "o'brien@example.ie", "x_y-z@my-host.example", "1234@123.example", "a!#$%&'*+/=?^_`{|}~-@example.com",
    "info@EXAMPLE.com", "Postmaster@example.com", f"{'l' * 64}@example.com", f"a@{'d' * 63}.com",
    f"{'a' * 64}@{'b' * 63}.{'c' * 63}.{'d' * 57}.com",  # 254 characters
    "a@b.c", "user@x.y.z.w.example", "user@a1.b2.c3d",
]

CORPUS = [
    *PLAIN,
    # quoted local parts, comments, display names
    '"john doe"@example.com', '"jane"@example.com', '"a\\"b"@example.com', '"a@b"@example.com', '""@example.com',
    '"a.b"@example.com', "john(comment)@example.com", "(c)john@example.com", "John <john@example.com>",
    "<john@example.com>", '"John" <john@example.com>', "john@example.com>", "john@(c)example.com",
    # dots
    ".a@example.com", "a.@example.com", "a..b@example.com", "a@.example.com", "a@example..com", "a@example.com.",
    "a@example.com..", "a@.", ".@example.com",
    # plus signs, empty parts, @-signs
    "+@example.com", "a+@example.com", "+a+b+@example.com", "@example.com", "a@", "@", "", "a", "a@@example.com",
    "a@b@example.com", "a@example@com",
    # lengths at and past the limits
    f"{'l' * 65}@example.com", f"a@{'d' * 64}.com", f"{'a' * 64}@{'b' * 63}.{'c' * 63}.{'d' * 58}.com",
    f"a@{'b' * 63}.{'c' * 63}.{'d' * 63}.{'e' * 61}", f"a@{'b' * 63}.{'c' * 63}.{'d' * 63}.{'e' * 62}",
    f"{'a' * 200}@{'b' * 50}.com", f"{'a' * 250}@b.co",
    # IDN and Punycode domains
    "a@xn--p1ai.com", "a@XN--P1AI.com", "a@xn--bcher-kva.example", "a@bücher.example", "a@рф.com",
    "a@xn--.com", "a@xn--zz.com", "a@ab--cd.com", "a@a--b.com", "a@xn--ls8h.la", "a@münchen.de", "a@MÜNCHEN.de",
    "a@ex\u0430mple.com", "\u0430@example.com", "jos\u00e9@example.com", "jose\u0301@example.com",
    # unicode look-alikes of the specials
    "a\uff20example.com", "a\ufe6bexample.com", "a@example\uff0ecom", "a@example\u3002com", "a@\uff45xample.com",
    "\u212aelvin@example.com", "kelvin@\u212a.com", "a@example.\u212a", "\u0131@example.com", "a@\u017f.com",
    "a@exa\u200bmple.com", "a\u200b@example.com", "a@example.com\u202e", "a@\u0660\u0661.com",
    # IP literals
    "a@[127.0.0.1]", "a@[IPv6:::1]", "a@[ipv6:2001:db8::1]", "a@[300.0.0.1]", "a@127.0.0.1", "a@[example.com]",
    # whitespace
    " a@example.com", "a@example.com ", "a @example.com", "a@ example.com", "a@exa mple.com", "\ta@example.com\n",
    "a@example.com\r", "\u00a0a@example.com\u00a0", "a\n@example.com",
    # numeric TLDs, underscores and hyphens in the domain
    "a@example.123", "a@1.2.3.4", "a@example.c0m", "a@example.co1", "a@123.com", "a@ex_ample.com",
    "a@_dmarc.example.com", "a@-example.com", "a@example-.com", "a@exa-mple.com", "a@example.-com",
    "a@example.com-", "a@e-.x.com", "a@x.-e.com",
    # special-use domains, dotless domains
    "a@localhost", "a@example.localhost", "a@x.local", "a@x.onion", "a@x.test", "a@test", "a@x.invalid",
    "a@x.arpa", "a@in-addr.arpa", "a@x.LOCAL", "a@com", "a@example", "a@x.localhostx", "a@xlocal.com",
    # control characters and other specials in the local part
    "a\x00@example.com", "a\x7f@example.com", "a,b@example.com", "a;b@example.com", "a:b@example.com",
    "a[b]@example.com", "a\\b@example.com", 'a"b@example.com', "a<b@example.com",
]


def _agrees(value: str) -> None:
    fast = _plain_email(value)
    library = _validated_email(value)
    if fast is not None:
        assert fast == library, f"the fast path says {fast!r}, email-validator {library!r}"
    stripped = _validated_email(value.strip())
    if stripped is None:
        with pytest.raises(InvalidIdentifier):
            normalise("email", value, region="GB")
    else:
        assert normalise("email", value, region="GB") == stripped


@pytest.mark.parametrize("value", CORPUS)
def test_corpus_agrees_with_email_validator(value):
    _agrees(value)


@pytest.mark.parametrize("value", PLAIN)
def test_plain_addresses_take_the_fast_path(value):
    assert _plain_email(value) == _validated_email(value) is not None


def test_the_corpus_is_tricky():
    """Most of the corpus is refused by the library, and the fast path leaves every non-plain address to it."""
    refused = [value for value in CORPUS if _validated_email(value) is None]
    assert len(refused) > 60
    assert not [value for value in CORPUS if value not in PLAIN and _plain_email(value) is not None and not value.isascii()]


_local = st.lists(st.text(st.sampled_from(ATEXT), min_size=1, max_size=12), min_size=1, max_size=4).map(".".join)
_label = st.one_of(
    st.text(st.sampled_from(HOST), min_size=1, max_size=10),
    st.sampled_from(["xn--p1ai", "XN--bcher-kva", "ab--c", "a" * 63, "b" * 64, "123", "c0m", "localhost", "test",
                     "local", "onion", "invalid", "arpa", "com", "CO", "k", "-a", "a-", "_x"]),
)
_domain = st.lists(_label, min_size=1, max_size=5).map(".".join)
# Plain-looking addresses, then the same with one tricky character put somewhere, or a piece cut out.
_plainish = st.builds(lambda local, domain: f"{local}@{domain}", _local, _domain)


@st.composite
def _mangled(draw) -> str:
    value = draw(_plainish)
    at = draw(st.integers(0, len(value)))
    action = draw(st.sampled_from(["insert", "replace", "delete", "pad"]))
    if action == "pad":
        return value + draw(st.text(st.sampled_from(ATEXT + "."), min_size=1, max_size=200))
    piece = draw(st.text(st.sampled_from(TRICKY + "@.-"), min_size=1, max_size=3))
    if action == "insert":
        return value[:at] + piece + value[at:]
    if action == "replace":
        return value[:at] + piece + value[at + 1 :]
    return value[:at] + value[at + len(piece) :]


_ascii_soup = st.text(st.characters(min_codepoint=0, max_codepoint=127), max_size=40)
_anything = st.text(st.sampled_from(ATEXT + HOST + TRICKY + "@@@..."), max_size=40)

FAST = settings(max_examples=2500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(_plainish)
@example("a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 57 + ".com")
def test_plain_looking_addresses_agree(value):
    _agrees(value)


@FAST
@given(_mangled())
def test_mangled_addresses_agree(value):
    _agrees(value)


@settings(max_examples=1500, deadline=None)
@given(st.one_of(_ascii_soup, _anything))
def test_any_text_agrees(value):
    _agrees(value)
