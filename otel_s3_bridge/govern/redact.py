"""What `content = "redact"` finds in a message text and the typed placeholder it puts in its place:
e-mail addresses [EMAIL], phone numbers [PHONE] (checked against each country's numbering plan by
`phonenumbers`), payment card numbers [CARD] (a card network's prefix, Luhn-checked) and IBANs
[IBAN] (country format and checksum, by `python-stdnum`), US social security numbers [SSN], IPv4
and IPv6 addresses [IP], and credentials [SECRET] (OpenAI and Anthropic keys, AWS access key ids
and secret keys, GitHub, Slack and Google tokens, JWTs, `Authorization` / `Bearer` values, PEM
private keys), plus the operator's own `LABEL=REGEX` patterns ([LABEL]). The rest is left as is.

Patterns are RE2's (`google-re2`): linear in the text whatever it holds, and all of them tried in
one pass (an `RE2::Set`), so a message without anything to replace costs one scan; only the
detectors that pass run again to place their findings, and what RE2 cannot say (a boundary before
a match, a checksum, a numbering plan) is checked on each candidate. Where two findings overlap,
the one that starts first wins, then the longer; phone numbers, the loosest kind, yield to any
other. Pure: compiles once, never reads files, clocks or the environment, never logs a finding.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass

import phonenumbers
import re2
from stdnum import iban, luhn

EMAIL, PHONE, CARD, IBAN, SSN, IP, SECRET = "EMAIL", "PHONE", "CARD", "IBAN", "SSN", "IP", "SECRET"
KINDS = (EMAIL, PHONE, CARD, IBAN, SSN, IP, SECRET)
LABEL = re.compile(r"[A-Z][A-Z0-9_]{0,31}")  # a user pattern's placeholder name
PHONE_REGIONS = frozenset(phonenumbers.SUPPORTED_REGIONS)


def _options(encoding: re2.Options.Encoding) -> re2.Options:
    options = re2.Options()
    options.encoding = encoding
    options.log_errors = False  # RE2 would write to the process's stderr, outside the bridge's logging
    return options


_BYTES, _UTF8 = _options(re2.Options.Encoding.LATIN1), _options(re2.Options.Encoding.UTF8)
# Phone and IBAN candidates judged, remembered (phonenumbers and stdnum's registry take 0.1-0.2 ms a
# number, and senders repeat theirs). Held in memory only, as the records being decoded are.
CHECK_CACHE = 4096
# A phone candidate holding more digits than one number ("212-736-5000 212-736-5001": the pattern
# runs on across the space) is split at its spaces; the numbering plans asked while splitting are
# bounded per text, so a text of endless digit groups costs no more than this many checks.
PHONE_SPLIT_CHECKS = 256
MAX_PHONE_DIGITS = 15  # E.164

WORD = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")  # byte values
ALNUM = WORD - {ord("_")}
BASE64 = ALNUM | set(b"+/=")
NON_ASCII = frozenset(range(0x80, 0x100))  # the bytes of a character beyond ASCII (a letter, perhaps)


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str  # the placeholder's name: EMAIL ... SECRET, or a user pattern's label
    start: int
    end: int
    detector: str  # which detector: "email", "openai", "aws_secret_access_key", ...


@dataclass(frozen=True)
class Detector:
    name: str
    kind: str
    pattern: str  # RE2 syntax
    group: int = 0  # the part of a match that is replaced (1: the value after its label)
    not_before: frozenset[int] = frozenset()  # an (ASCII) byte just before the match: not one
    not_after: frozenset[int] = frozenset()  # ... just after it
    check: Callable[[str, bytes, bytes], bool] | None = None  # (value, 2 bytes before, 2 after): is it one


def _mixed(value: str, before: bytes, after: bytes) -> bool:
    """Generated keys mix digits with letters; words and names written by people rarely do."""
    return any(c.isdigit() for c in value) and any(c.isalpha() for c in value)


def _random_key(value: str, before: bytes, after: bytes) -> bool:
    return (not value.startswith("sk-ant-") and _mixed(value, before, after)
            and any(c.isupper() for c in value) and any(c.islower() for c in value))


# Card networks' prefixes (IIN ranges) and lengths: a Luhn-valid run of digits no network issues (an
# order number, a timestamp) is not a card.
_CARD_NUMBER = re.compile(
    r"4\d{12}(?:\d{3}){0,2}"  # Visa: 13, 16, 19
    r"|(?:5[1-5]\d{2}|222[1-9]|22[3-9]\d|2[3-6]\d{2}|27[01]\d|2720)\d{12}"  # Mastercard
    r"|3[47]\d{13}"  # American Express
    r"|(?:6011|65\d{2}|64[4-9]\d)\d{12,15}"  # Discover
    r"|35(?:2[89]|[3-8]\d)\d{12,15}"  # JCB
    r"|3(?:0[0-5]|[68]\d)\d{11,16}"  # Diners Club
    r"|62\d{14,17}"  # UnionPay
    r"|(?:50|5[6-9]|6\d)\d{10,17}")  # Maestro


def _card(value: str, before: bytes, after: bytes) -> bool:
    return _valid_card(value)


@functools.lru_cache(maxsize=CHECK_CACHE)
def _valid_card(value: str) -> bool:
    separators = {c for c in value if c in " -"}
    digits = value.replace(" ", "").replace("-", "")
    return len(separators) <= 1 and bool(_CARD_NUMBER.fullmatch(digits)) and luhn.is_valid(digits)


def _iban(value: str, before: bytes, after: bytes) -> bool:
    return _valid_iban(value.replace(" ", ""))


@functools.lru_cache(maxsize=CHECK_CACHE)
def _valid_iban(value: str) -> bool:
    # Country format and ISO 7064 checksum; not stdnum's per-country bank registries, which miss
    # real banks (a Belgian IBAN of a bank it does not list would stay in the text).
    return iban.is_valid(value, check_country=False)


def _ssn(value: str, before: bytes, after: bytes) -> bool:
    digits = value.replace("-", "").replace(" ", "")
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _ipv4(value: str, before: bytes, after: bytes) -> bool:
    if after[:1] == b"." and after[1:2].isdigit():
        return False  # one more dotted number: an OID or a version, not an address
    # "Chrome/120.0.0.0": a version after a product's name (a URL's "//" is not that)
    return not (len(before) == 2 and before[1:] == b"/" and before[0] in WORD)


def _ipv6(value: str, before: bytes, after: bytes) -> bool:
    return _valid_ipv6(value)


@functools.lru_cache(maxsize=CHECK_CACHE)
def _valid_ipv6(value: str) -> bool:
    if value.count(":") < 2 or not any(c not in ":." for c in value):
        return False
    try:
        ipaddress.IPv6Address(value.split("%", 1)[0])
    except ValueError:
        return False
    return True


_DATE_OR_TIME = re.compile(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{4}|\d{1,2}:\d{2}")


@functools.lru_cache(maxsize=CHECK_CACHE)
def _valid_phone(candidate: str, region: str) -> bool:
    if not 7 <= sum(c.isdigit() for c in candidate) <= MAX_PHONE_DIGITS or _DATE_OR_TIME.search(candidate):
        return False
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(candidate, region))
    except phonenumbers.NumberParseException:
        return False


def _phone_numbers_in(value: str, region: str, budget: list[int]) -> list[tuple[int, int]]:
    """(start, end) in `value` of the numbers a run of several holds: from the left, the longest run
    of up to four space-separated pieces that is a valid number; `budget[0]` checks at most."""
    pieces = [match.span() for match in _PIECE.finditer(value)]
    found: list[tuple[int, int]] = []
    index = 0
    while index < len(pieces) and budget[0] > 0:
        for last in range(min(len(pieces), index + 4) - 1, index - 1, -1):
            start, end = pieces[index][0], pieces[last][1]
            budget[0] -= 1
            if _valid_phone(value[start:end], region):
                found.append((start, end))
                index = last + 1
                break
            if budget[0] <= 0:
                break
        else:
            index += 1
    return found


_PIECE = re.compile(r"\S+")


def _phone_check(region: str) -> Callable[[str, bytes, bytes], bool]:
    def check(value: str, before: bytes, after: bytes) -> bool:
        if after[:1] == b"." and after[1:2].isdigit():
            return False  # part of a longer dotted number (a version, an address)
        return _valid_phone(value, region)
    return check


_B64 = "A-Za-z0-9/+"
_HEX = "0-9A-Fa-f"
_KEY = WORD | {ord("-")}
BUILT_IN = (
    Detector("pem_private_key", SECRET,
             r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?s:.*?)-----END [A-Z0-9 ]*PRIVATE KEY-----"
             r"|-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[A-Za-z0-9+/=\s\\]*"),
    Detector("anthropic", SECRET, r"sk-ant-[A-Za-z0-9_-]{20,}", not_before=_KEY),
    Detector("openai", SECRET, r"sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}", not_before=_KEY,
             check=_random_key),
    Detector("aws_access_key_id", SECRET, r"(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}", not_before=ALNUM,
             not_after=ALNUM),
    Detector("aws_secret_access_key", SECRET,
             rf"(?i:aws_?secret_?access_?key|secret_?access_?key|aws_?secret(?:_?key)?)[\"']?\s*[:=]\s*[\"']?"
             rf"([{_B64}]{{40}})", group=1, not_after=BASE64),
    Detector("aws_secret_access_key", SECRET,  # the credentials CSV: a key id, then its secret
             rf"(?:AKIA|ASIA)[A-Z0-9]{{16}}[ \t]*[,;|:\t][ \t]*([{_B64}]{{40}})", group=1, not_after=BASE64),
    Detector("github", SECRET, r"gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255}", not_before=_KEY),
    Detector("slack", SECRET, r"(?:xox[abposre]|xapp-[0-9])-[A-Za-z0-9-]{10,}", not_before=_KEY, check=_mixed),
    Detector("slack_webhook", SECRET, r"https://hooks\.slack\.com/services/[A-Za-z0-9/_-]{20,}"),
    Detector("google", SECRET, r"AIza[0-9A-Za-z_-]{35}", not_before=_KEY, not_after=_KEY),
    Detector("jwt", SECRET, r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*", not_before=_KEY),
    Detector("authorization", SECRET,
             r"(?i:authorization)[\"']?\s*[:=]\s*[\"']?(?i:bearer|basic|token|apikey)\s+([A-Za-z0-9._~+/=-]{8,})",
             group=1),
    Detector("bearer", SECRET, r"(?i:\bbearer)\s+([A-Za-z0-9._~+/-]{16,}=*)", group=1, check=_mixed),
    Detector("email", EMAIL,  # internationalized too (anna.müller@bücher.example): any non-ASCII byte as a letter
             r"[A-Za-z0-9\x80-\xff][A-Za-z0-9\x80-\xff._%+-]{0,63}@"
             r"(?:[A-Za-z0-9\x80-\xff](?:[A-Za-z0-9\x80-\xff-]{0,61}[A-Za-z0-9\x80-\xff])?\.)+"
             r"[A-Za-z\x80-\xff]{2,24}", not_before=WORD | set(b".%+-") | NON_ASCII, not_after=_KEY | NON_ASCII),
    Detector("ssn", SSN, r"[0-9]{3}-[0-9]{2}-[0-9]{4}", not_before=_KEY, not_after=_KEY, check=_ssn),
    Detector("ssn", SSN,  # unformatted or spaced: only where it is called one
             r"(?i:\bssn|social security(?: number| no\.?)?|\bsocial sec\.?(?: no\.?)?)[^0-9\n]{0,24}?"
             r"([0-9]{3}[ -]?[0-9]{2}[ -]?[0-9]{4})", group=1, not_after=_KEY, check=_ssn),
    Detector("card", CARD, r"[0-9](?:[ -]?[0-9]){12,18}", not_before=WORD | set(b".-"),
             not_after=_KEY, check=_card),
    Detector("iban", IBAN, r"[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?", not_before=ALNUM,
             not_after=ALNUM, check=_iban),
    Detector("ipv4", IP, r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}"
             r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])",
             not_before=WORD | {ord(".")}, not_after=_KEY, check=_ipv4),
    Detector("ipv6", IP, rf"[{_HEX}]{{0,4}}(?::[{_HEX}]{{0,4}}){{2,7}}(?:\.[0-9]{{1,3}}){{0,3}}(?:%[A-Za-z0-9]+)?",
             not_before=WORD | set(b":."), not_after=WORD | {ord(":")}, check=_ipv6),
)


def _phone_detector(region: str) -> Detector:
    return Detector("phone", PHONE, r"\+?\(?[0-9][0-9 ().-]{5,}[0-9]",
                    not_before=WORD | set(b".-+"), not_after=_KEY, check=_phone_check(region))


def parse_patterns(entries: tuple[str, ...] | list[str]) -> tuple[tuple[str, str], ...]:
    """`LABEL=REGEX` entries (RE2 syntax) -> (label, regex) pairs; ValueError naming a bad entry."""
    pairs: list[tuple[str, str]] = []
    for entry in entries:
        label, sep, pattern = str(entry).partition("=")
        label = label.strip()
        if not sep or not LABEL.fullmatch(label) or not pattern:
            raise ValueError(f"{entry!r} is not LABEL=REGEX (LABEL: capitals, digits and _, up to 32)")
        if label in KINDS:
            raise ValueError(f"the label {label} is one of the built-in placeholders ({', '.join(KINDS)})")
        try:
            compiled = re2.compile(pattern, options=_UTF8)
        except re2.error as exc:
            raise ValueError(f"the pattern of {label} is not an RE2 regular expression "
                             f"(no look-arounds or back-references): {exc}") from None
        if compiled.search("") is not None:
            raise ValueError(f"the pattern of {label} matches the empty text")
        if any(existing == label for existing, _ in pairs):
            raise ValueError(f"the label {label} is given twice")
        pairs.append((label, pattern))
    return tuple(pairs)


class Redactor:
    """The detectors of one configuration; `find` and `redact` are pure and safe across threads."""

    def __init__(self, patterns: tuple[tuple[str, str], ...] = (), phone_region: str = "US") -> None:
        self.phone_region = phone_region
        self.detectors = BUILT_IN + (_phone_detector(phone_region),)
        # The built-in patterns read the UTF-8 bytes one by one (Latin-1 mode: a byte beyond ASCII is
        # one character, so a class can take any of them as a letter and the automaton stays small).
        self._compiled = [re2.compile(detector.pattern.encode(), options=_BYTES) for detector in self.detectors]
        self._any = re2.Set.SearchSet(_BYTES)
        for detector in self.detectors:
            self._any.Add(detector.pattern.encode())
        self._any.Compile()
        # The operator's own are read as UTF-8, as written; each is one more linear pass.
        self.user_detectors = tuple(Detector(f"pattern:{label}", label, pattern) for label, pattern in patterns)
        self._user_compiled = [re2.compile(detector.pattern, options=_UTF8) for detector in self.user_detectors]

    def find(self, text: str) -> list[Finding]:
        """What is to be replaced in `text`: non-overlapping findings, in order."""
        data = text.encode("utf-8", "surrogatepass")  # offsets are bytes until the end
        hits = self._any.Match(data) or []
        if not hits and not self.user_detectors:
            return []
        found: list[Finding] = []
        phones: list[Finding] = []
        split_budget = [PHONE_SPLIT_CHECKS]
        runs = [(self.detectors[index], self._compiled[index]) for index in hits]
        for detector, compiled in (*runs, *zip(self.user_detectors, self._user_compiled)):
            for match in compiled.finditer(data):
                whole_start, whole_end = match.span()
                start, end = match.span(detector.group) if detector.group else (whole_start, whole_end)
                if start == end or (whole_start and data[whole_start - 1] in detector.not_before) or (
                        whole_end < len(data) and data[whole_end] in detector.not_after):
                    continue
                value = data[start:end].decode("utf-8", "surrogatepass")
                if detector.check is not None and not detector.check(value, data[max(0, start - 2):start],
                                                                     data[end:end + 2]):
                    if detector.kind == PHONE and sum(c.isdigit() for c in value) > MAX_PHONE_DIGITS:
                        phones.extend(Finding(PHONE, start + first, start + last, detector.name) for first, last
                                      in _phone_numbers_in(value, self.phone_region, split_budget))
                    continue
                (phones if detector.kind == PHONE else found).append(Finding(detector.kind, start, end, detector.name))
        kept = _without_overlaps(found)
        if phones:  # the loosest kind (an IP address or a card number reads as one too): they yield
            kept = _without_overlaps(kept + _outside(_without_overlaps(phones), kept))
        return kept if text.isascii() else _in_characters(kept, data)

    def redact(self, text: str) -> str:
        findings = self.find(text)
        if not findings:
            return text
        parts: list[str] = []
        position = 0
        for finding in findings:
            parts.append(text[position:finding.start])
            parts.append(f"[{finding.kind}]")
            position = finding.end
        parts.append(text[position:])
        return "".join(parts)


def _outside(findings: list[Finding], others: list[Finding]) -> list[Finding]:
    """Those of `findings` that overlap none of `others` (both in order, without overlaps: one walk)."""
    kept, index = [], 0
    for finding in findings:
        while index < len(others) and others[index].end <= finding.start:
            index += 1
        if index == len(others) or others[index].start >= finding.end:
            kept.append(finding)
    return kept


def _in_characters(findings: list[Finding], data: bytes) -> list[Finding]:
    """Byte offsets (in order) as character offsets, in one walk over the text."""
    converted, byte_position, char_position = [], 0, 0
    for finding in findings:
        start = char_position + len(data[byte_position:finding.start].decode("utf-8", "surrogatepass"))
        end = start + len(data[finding.start:finding.end].decode("utf-8", "surrogatepass"))
        converted.append(Finding(finding.kind, start, end, finding.detector))
        byte_position, char_position = finding.end, end
    return converted


def _without_overlaps(findings: list[Finding]) -> list[Finding]:
    findings.sort(key=lambda finding: (finding.start, finding.start - finding.end))
    kept: list[Finding] = []
    for finding in findings:
        if not kept or finding.start >= kept[-1].end:
            kept.append(finding)
    return kept


@functools.lru_cache(maxsize=16)
def redactor(patterns: tuple[tuple[str, str], ...] = (), phone_region: str = "US") -> Redactor:
    """The Redactor of one configuration, built once per process."""
    return Redactor(patterns, phone_region)
