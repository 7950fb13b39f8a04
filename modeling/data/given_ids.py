"""Documents that arrive as token ids (MDS id columns) rather than text: the store keeps them as they are, so
they must be its tokenizer's, and they must be whole documents.

- **Checked.** Every id must lie inside the store tokenizer's vocabulary, and the first documents of a part must
  survive a round trip (ids -> text -> the same ids): ids of another tokenizer decode to text that tokenizes
  otherwise.
- **Cut into documents.** ModernBERT's tokenized MDS holds one document per sample (`[CLS] ... [SEP]`, maybe
  padded); its older converter (and llm-foundry's) concatenates documents, each with its `[CLS]`/`[SEP]`, and
  cuts the stream every N ids, so a sample holds ends and starts of several. Both are read as one stream of
  samples: a document ends at `[SEP]`, or where a sample starts with `[CLS]`; a document a sample cuts
  continues in the next (up to the part's end, where what was read of it is stored). A source that writes no
  `[CLS]` or `[SEP]` at all has one document per sample. The store keeps documents bare: `[CLS]`, `[SEP]` and
  padding are dropped.
"""

from __future__ import annotations

import numpy as np

from modeling.common.errors import DataError
from modeling.common.skips import SkipLog


class GivenIds:
    ROUND_TRIP_DOCUMENTS = 16

    def __init__(self, tokenizer, source: str):
        self.vocabulary, self.source = len(tokenizer), source
        self.cls, self.sep, self.pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
        self.checked = self.matched = 0
        self.stream = False  # a sample showed a document boundary inside it: samples are cuts of one stream
        self.carry: list[np.ndarray] = []  # the start of a document the last samples cut
        self.carry_where = ""

    def documents(self, samples, backend, skips: SkipLog, last: bool = False) -> list[tuple[str, list[int], str]]:
        """(where, bare ids, decoded text) of every document the samples complete (all of them when `last`)."""
        found: list[tuple[str, np.ndarray]] = []
        for where, sample in samples:
            found += self._split(where, self._checked(where, sample.ids))
        if last and self.carry:
            found.append((self.carry_where, np.concatenate(self.carry)))
            self.carry = []
        kept = []
        for where, ids in found:
            ids = self._bare(ids)
            if ids:
                kept.append((where, ids))
            else:  # nothing but [CLS], [SEP] and padding
                skips.add(self.source, "empty document", where)
        if not kept:
            return []
        texts = backend.decode_batch([ids for _, ids in kept], skip_special_tokens=False)
        self._round_trip(kept, texts, backend)
        return [(where, ids, text) for (where, ids), text in zip(kept, texts, strict=True)]

    def _checked(self, where: str, ids) -> np.ndarray:
        ids = np.asarray(ids).astype(np.int64, copy=False)
        if len(ids) and (ids.min() < 0 or ids.max() >= self.vocabulary):
            bad = int(ids.max()) if ids.max() >= self.vocabulary else int(ids.min())
            raise DataError(
                f"{where}: token id {bad} is outside the store tokenizer's {self.vocabulary} ids; these ids come "
                "from another tokenizer"
            )
        return ids

    def _split(self, where: str, ids: np.ndarray) -> list[tuple[str, np.ndarray]]:
        """The documents this sample completes; what it leaves open is carried."""
        real = np.flatnonzero(ids != self.pad)
        ids = ids[: real[-1] + 1] if len(real) else ids[:0]  # trailing padding off
        if not self.stream and ((ids == self.sep).any() or (ids == self.cls).any()):
            self.stream = True
        if not self.stream:  # bare ids, no boundaries written: one document per sample
            return [(where, ids)]
        found = []
        if len(ids) and ids[0] == self.cls and self.carry:  # a document starts here: the one carried is complete
            found.append((self.carry_where, np.concatenate(self.carry)))
            self.carry = []
        start = 0
        for end in np.flatnonzero(ids == self.sep).tolist():
            found.append((self.carry_where if self.carry else where, np.concatenate([*self.carry, ids[start:end]])))
            self.carry, start = [], end + 1
        if start < len(ids):
            if not self.carry:
                self.carry_where = where
            self.carry.append(ids[start:])
        return found

    def _bare(self, ids: np.ndarray) -> list[int]:
        ids = ids[ids != self.pad]
        if len(ids) and ids[0] == self.cls:
            ids = ids[1:]
        if len(ids) and ids[-1] == self.sep:
            ids = ids[:-1]
        return ids.tolist()

    def _round_trip(self, kept, texts, backend) -> None:
        if self.checked >= self.ROUND_TRIP_DOCUMENTS:
            return
        sample = range(min(len(kept), self.ROUND_TRIP_DOCUMENTS - self.checked))
        again = backend.encode_batch([texts[i] for i in sample], add_special_tokens=False)
        self.matched += sum(again[i].ids == kept[i][1] for i in sample)
        self.checked += len(sample)
        if self.matched * 2 < self.checked:
            raise DataError(
                f"{kept[0][0]}: the token ids of source '{self.source}' do not look like the store tokenizer's "
                f"({self.matched} of the first {self.checked} documents come back the same from ids -> text -> "
                "ids); prepare with the tokenizer that wrote them (tokenizer.path)"
            )
