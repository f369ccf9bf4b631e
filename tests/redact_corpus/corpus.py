"""The redact corpora: documents whose values are labelled ⟦KIND|value⟧ or ⟦KIND:detector|value⟧,
read into (text, labels), and the scoring of a detector's findings against the labels: a label is
recalled when findings of its kind cover every character of it; a finding is precise when it
overlaps a label of its kind. Used by tests/test_redact.py and bench/redact_bench.py.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).parent
LABELLED, ORDINARY = HERE / "labelled.txt", HERE / "ordinary.txt"
_LABEL = re.compile(r"⟦([A-Z]+)(?::([a-z0-9_]+))?\|(.*?)⟧", re.DOTALL)


@dataclass(frozen=True)
class Label:
    kind: str
    detector: str | None
    start: int
    end: int


@dataclass(frozen=True)
class Document:
    title: str
    text: str
    labels: tuple[Label, ...]


def documents(path: Path) -> list[Document]:
    out = []
    blocks = re.split(r"^=== (.+?) ===\n", path.read_text(encoding="utf-8"), flags=re.MULTILINE)
    for title, marked in zip(blocks[1::2], blocks[2::2]):
        text, labels, position = [], [], 0
        for match in _LABEL.finditer(marked):
            text.append(marked[position:match.start()])
            start = sum(map(len, text))
            text.append(match.group(3))
            labels.append(Label(match.group(1), match.group(2), start, start + len(match.group(3))))
            position = match.end()
        text.append(marked[position:])
        out.append(Document(title, "".join(text), tuple(labels)))
    return out


@dataclass
class Score:
    labels: Counter
    recalled: Counter
    findings: Counter
    precise: Counter
    missed: list[tuple[str, str]]  # (document title, value)
    false: list[tuple[str, str, str]]  # (document title, kind, value)

    def recall(self, kind: str) -> float:
        return self.recalled[kind] / self.labels[kind] if self.labels[kind] else 1.0

    def precision(self, kind: str) -> float:
        return self.precise[kind] / self.findings[kind] if self.findings[kind] else 1.0


def score(docs: list[Document], find) -> Score:
    """`find(text)` -> findings with kind, start, end."""
    result = Score(Counter(), Counter(), Counter(), Counter(), [], [])
    for document in docs:
        findings = find(document.text)
        for label in document.labels:
            result.labels[label.kind] += 1
            if label.detector:
                result.labels[f"{label.kind}:{label.detector}"] += 1
            covered = set()
            for finding in findings:
                if finding.kind == label.kind:
                    covered.update(range(max(finding.start, label.start), min(finding.end, label.end)))
            if len(covered) == label.end - label.start:
                result.recalled[label.kind] += 1
                if label.detector:
                    result.recalled[f"{label.kind}:{label.detector}"] += 1
            else:
                result.missed.append((document.title, document.text[label.start:label.end]))
        for finding in findings:
            result.findings[finding.kind] += 1
            if any(label.kind == finding.kind and label.start < finding.end and finding.start < label.end
                   for label in document.labels):
                result.precise[finding.kind] += 1
            else:
                result.false.append((document.title, finding.kind, document.text[finding.start:finding.end]))
    return result
